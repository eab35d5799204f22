// CPU 1-bit masks and narrow indices (format: quant_math.h, "generic bit
// streams"). Both split the stream into runs of 8 values, which fill whole
// bytes, so threads never share an output byte.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>

#include "actnn/kernels/kernels.h"

namespace actnn {
namespace kernels {
namespace {
constexpr int64_t kGrainRuns = 4096;
}

void pack_mask_cpu(const uint8_t* mask, int64_t n, uint8_t* out) {
  at::parallel_for(0, (n + 7) / 8, kGrainRuns, [&](int64_t b, int64_t e) {
    for (int64_t run = b; run < e; ++run) {
      const int64_t i0 = run * 8;
      const int count = int(std::min<int64_t>(8, n - i0));
      uint8_t byte = 0;
      for (int i = 0; i < count; ++i) byte |= uint8_t(mask[i0 + i] != 0) << i;
      out[run] = byte;
    }
  });
}

void unpack_mask_cpu(const uint8_t* packed, int64_t n, uint8_t* out) {
  at::parallel_for(0, (n + 7) / 8, kGrainRuns, [&](int64_t b, int64_t e) {
    for (int64_t run = b; run < e; ++run) {
      const int64_t i0 = run * 8;
      const int count = int(std::min<int64_t>(8, n - i0));
      for (int i = 0; i < count; ++i) out[i0 + i] = (packed[run] >> i) & 1u;
    }
  });
}

void scale_by_mask_cpu(const float* grad, const uint8_t* packed, int64_t n, float if_set, float if_clear,
                       float* out) {
  at::parallel_for(0, (n + 7) / 8, kGrainRuns, [&](int64_t b, int64_t e) {
    for (int64_t run = b; run < e; ++run) {
      const int64_t i0 = run * 8;
      const int count = int(std::min<int64_t>(8, n - i0));
      const uint8_t bits = packed[run];
      for (int i = 0; i < count; ++i) {
        const float f = ((bits >> i) & 1u) ? if_set : if_clear;
        out[i0 + i] = f == 0.0f ? 0.0f : grad[i0 + i] * f;  // 0 exactly, even for Inf / NaN gradients
      }
    }
  });
}

int64_t pack_index_cpu(const int64_t* index, int64_t n, int64_t limit, int w, uint8_t* out) {
  std::atomic<int64_t> first_bad{n};
  at::parallel_for(0, (n + 7) / 8, kGrainRuns, [&](int64_t b, int64_t e) {
    uint32_t v[8];
    for (int64_t run = b; run < e; ++run) {
      const int64_t i0 = run * 8;
      const int count = int(std::min<int64_t>(8, n - i0));
      for (int i = 0; i < count; ++i) {
        const int64_t x = index[i0 + i];
        if (x < 0 || x >= limit) {
          int64_t seen = first_bad.load();
          while (i0 + i < seen && !first_bad.compare_exchange_weak(seen, i0 + i)) {
          }
          return;
        }
        v[i] = uint32_t(x);
      }
      pack8(v, count, w, out + run * w);
    }
  });
  const int64_t bad = first_bad.load();
  return bad == n ? -1 : bad;
}

void unpack_index_cpu(const uint8_t* packed, int64_t n, int w, int64_t* out) {
  at::parallel_for(0, n, kGrainRuns * 8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = unpack_value(packed, i, w);
  });
}

}  // namespace kernels
}  // namespace actnn
