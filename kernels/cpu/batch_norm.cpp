// CPU batch-norm backward (training mode) that may write the input gradient
// over the saved input: runtime/buffer_reuse.cpp calls it when B's
// dequantized BN input has no other reader, so the backward of a BN layer
// holds two activation-sized buffers (dy and x/dx) instead of ATen's three.
//
// Per channel c, over the M = n * inner values of that channel:
//   dot_c = sum(dy * (x - mean_c)),  sum_c = sum(dy)
//   dx    = (dy - sum_c / M - (x - mean_c) * dot_c * invstd_c^2 / M) * invstd_c * w_c
//   dw_c  = dot_c * invstd_c,  db_c = sum_c
// which is ATen's native_batch_norm_backward for train=True. When x is a
// stochastically rounded copy x' = x + e (noise_var given), the product
// (x' - mean) * dot' holds dy_i * e_i^2 in expectation; with v_i the
// expected e_i^2, dx uses dy * (1 + v_i * invstd^2 / M) in place of dy.
// Sums are taken in double per channel (ATen sums in float), so results agree to rounding,
// not bit for bit.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "actnn/kernels/kernels.h"

namespace actnn {
namespace kernels {

void batch_norm_backward_cpu(const BatchNormBackwardArgs& a) {
  const int64_t n = a.n, c = a.c, inner = a.inner;
  const double count = double(n) * double(inner);
  std::vector<double> sum(size_t(c), 0.0), dot(size_t(c), 0.0);
  at::parallel_for(0, c, 1, [&](int64_t b, int64_t e) {
    for (int64_t ch = b; ch < e; ++ch) {
      const float mean = a.mean[ch];
      double s = 0, d = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float* dy = a.grad_out + (i * c + ch) * inner;
        const float* x = a.x + (i * c + ch) * inner;
        // One plane in eight float lanes (which the compiler vectorizes
        // without reassociating), planes in double.
        float ps[8] = {0}, pd[8] = {0};
        int64_t j = 0;
        for (; j + 8 <= inner; j += 8)
          for (int l = 0; l < 8; ++l) {
            ps[l] += dy[j + l];
            pd[l] += dy[j + l] * (x[j + l] - mean);
          }
        for (; j < inner; ++j) {
          ps[0] += dy[j];
          pd[0] += dy[j] * (x[j] - mean);
        }
        for (int l = 0; l < 8; ++l) {
          s += ps[l];
          d += pd[l];
        }
      }
      sum[size_t(ch)] = s;
      dot[size_t(ch)] = d;
    }
  });
  for (int64_t ch = 0; ch < c; ++ch) {
    if (a.grad_weight) a.grad_weight[ch] = float(dot[size_t(ch)] * double(a.invstd[ch]));
    if (a.grad_bias) a.grad_bias[ch] = float(sum[size_t(ch)]);
  }
  if (!a.grad_input) return;
  at::parallel_for(0, n * c, 1, [&](int64_t b, int64_t e) {
    for (int64_t plane = b; plane < e; ++plane) {
      const int64_t ch = plane % c;
      const float invstd = a.invstd[ch];
      const float w = a.weight ? a.weight[ch] : 1.0f;
      const float mean = a.mean[ch];
      const float mean_dy = float(sum[size_t(ch)] / count);
      const float k = float(dot[size_t(ch)] / count) * invstd * invstd;
      const float scale = invstd * w;
      const float* dy = a.grad_out + plane * inner;
      const float* x = a.x + plane * inner;
      float* dx = a.grad_input + plane * inner;  // may be x itself
      if (!a.noise_var) {
        for (int64_t j = 0; j < inner; ++j) dx[j] = (dy[j] - mean_dy - (x[j] - mean) * k) * scale;
        continue;
      }
      // Rounded input: E[(x - mean) * dot] holds dy * var(noise) of the value
      // itself, which the factor on dy gives back, one run per group.
      const float* var = a.noise_var + (plane / c) * a.noise_groups;
      const float per_var = float(double(invstd) * double(invstd) / count);
      const int64_t G = a.noise_group_size, first = ch * inner;  // the plane's place in its sample
      for (int64_t j = 0; j < inner;) {
        const int64_t g = (first + j) / G, end = std::min(inner, (g + 1) * G - first);
        const float keep = 1.0f + var[g] * per_var;
        for (; j < end; ++j) dx[j] = (dy[j] * keep - mean_dy - (x[j] - mean) * k) * scale;
      }
    }
  });
}

}  // namespace kernels
}  // namespace actnn
