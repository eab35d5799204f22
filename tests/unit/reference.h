// A scalar reference of the packed format, written straight from the
// definitions in quant_math.h: one value at a time, no runs, no threads. The
// optimized CPU kernels (and, through the _CUDA tests, the CUDA kernels) must
// produce exactly its bytes.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "actnn/kernels/quant_math.h"

namespace actnn {
namespace test {

struct Packed {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> lo, scale;
};

inline Packed reference_quantize(const at::Tensor& x_in, const std::vector<int64_t>& bits,
                                 int64_t G, uint64_t seed, uint64_t offset) {
  using namespace kernels;
  const at::Tensor x = x_in.to(at::kFloat).contiguous().view(-1);
  const Elem elem = x_in.scalar_type() == at::kFloat  ? Elem::Float32
                    : x_in.scalar_type() == at::kHalf ? Elem::Float16
                                                      : Elem::BFloat16;
  const bool half = meta_is_half(elem);
  const int64_t N = x_in.dim() == 0 ? 1 : x_in.size(0);
  const int64_t D = N == 0 ? 0 : x_in.numel() / N;
  const int64_t P = (D + G - 1) / G;
  const float* v = x.data_ptr<float>();
  Packed out;
  out.lo.resize(N * P);
  out.scale.resize(N * P);
  int64_t total = 0;
  for (int64_t n = 0; n < N; ++n) total += P * G * bits[bits.size() == 1 ? 0 : n] / 8;
  out.codes.assign(total, 0);
  int64_t byte0 = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int b = int(bits[bits.size() == 1 ? 0 : n]);
    for (int64_t g = 0; g < P; ++g) {
      const int64_t len = std::min(G, D - g * G);
      float mn = v[n * D + g * G], mx = mn;
      bool finite = true;
      for (int64_t i = 0; i < len; ++i) {
        const float xi = v[n * D + g * G + i];
        mn = min_total(xi, mn);
        mx = max_total(xi, mx);
        finite = finite && is_finite(xi);
      }
      const GroupCode c = encode_group(mn, mx, finite, b, half, elem == Elem::Float32);
      out.lo[n * P + g] = c.lo_bits;
      out.scale[n * P + g] = c.scale_bits;
      for (int64_t i = 0; i < len; ++i) {
        const uint64_t e = uint64_t(n * P * G + g * G + i);
        const uint32_t r = random_bits16(philox_block(seed, offset, e >> 3), e);
        const uint32_t q = c.stochastic ? stochastic_code(v[n * D + g * G + i], c, uniform16(r),
                                                          max_code(b))
                                        : c.fixed_code;
        const int64_t bit = (g * G + i) * b;
        out.codes[byte0 + bit / 8] |= uint8_t(q << (bit % 8));
      }
    }
    byte0 += P * G * b / 8;
  }
  return out;
}

// x' of every value of a packed tensor, one at a time, with or without the
// subtractive dither of (seed, offset), as fp32 values in x's shape.
inline at::Tensor reference_dequantize(const at::Tensor& codes, const at::Tensor& lo_t, const at::Tensor& scale_t,
                                       const std::vector<int64_t>& bits, at::IntArrayRef shape, int64_t G,
                                       bool half_meta, bool dither, uint64_t seed, uint64_t offset) {
  using namespace kernels;
  at::Tensor out = at::empty(shape, at::kFloat);
  const int64_t N = shape.empty() ? 1 : shape[0];
  const int64_t D = N == 0 ? 0 : out.numel() / N;
  const int64_t P = (D + G - 1) / G;
  const uint8_t* c = codes.contiguous().data_ptr<uint8_t>();
  const at::Tensor lo_c = lo_t.contiguous(), scale_c = scale_t.contiguous();
  const auto* lo = reinterpret_cast<const uint16_t*>(lo_c.data_ptr());
  const auto* scale = reinterpret_cast<const uint16_t*>(scale_c.data_ptr());
  float* y = out.data_ptr<float>();
  int64_t byte0 = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int b = int(bits[bits.size() == 1 ? 0 : n]);
    for (int64_t g = 0; g < P; ++g) {
      const GroupDecode d = decode_group(lo[n * P + g], scale[n * P + g], half_meta);
      for (int64_t i = 0; i < std::min(G, D - g * G); ++i) {
        const uint32_t q = unpack_value(c + byte0, g * G + i, b);
        const uint64_t e = uint64_t(n * P * G + g * G + i);
        const float u = uniform16(random_bits16(philox_block(seed, offset, e >> 3), e));
        y[n * D + g * G + i] = dither ? decode_dithered(q, u, d) : decode_value(q, d);
      }
    }
    byte0 += P * G * b / 8;
  }
  return out;
}

}  // namespace test
}  // namespace actnn
