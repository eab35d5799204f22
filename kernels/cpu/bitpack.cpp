// CPU 1-bit masks and narrow indices (format: quant_math.h, "generic bit
// streams"). Both split the stream into runs of 8 values, which fill whole
// bytes, so threads never share an output byte.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define ACTNN_X86_AVX2 1
#endif

#include "actnn/kernels/kernels.h"

namespace actnn {
namespace kernels {
namespace {

constexpr int64_t kGrainRuns = 4096;

// Runs [b, e) of 8 values (mask bytes, or floats) into one byte each, bit i
// set when value i != 0 (NaN compares unequal); the last run may be short.
template <typename T>
void pack_runs_scalar(const T* x, int64_t n, uint8_t* out, int64_t b, int64_t e) {
  for (int64_t run = b; run < e; ++run) {
    const int64_t i0 = run * 8;
    const int count = int(std::min<int64_t>(8, n - i0));
    uint8_t byte = 0;
    for (int i = 0; i < count; ++i) byte |= uint8_t(x[i0 + i] != T(0)) << i;
    out[run] = byte;
  }
}

#if ACTNN_X86_AVX2
// Four runs (32 mask bytes) per step: compare with zero, movemask, invert; the
// 32-bit result stored little-endian is the four output bytes in order.
__attribute__((target("avx2"))) void pack_runs_avx2(const uint8_t* mask, int64_t n, uint8_t* out, int64_t b,
                                                    int64_t e) {
  const int64_t whole = std::min(e, n / 8);
  const __m256i zero = _mm256_setzero_si256();
  int64_t run = b;
  for (; run + 4 <= whole; run += 4) {
    const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mask + run * 8));
    const uint32_t bits = ~uint32_t(_mm256_movemask_epi8(_mm256_cmpeq_epi8(m, zero)));
    std::memcpy(out + run, &bits, sizeof bits);
  }
  pack_runs_scalar(mask, n, out, run, e);
}
#endif

using PackRuns = void (*)(const uint8_t*, int64_t, uint8_t*, int64_t, int64_t);

PackRuns pick_pack_runs() {
#if ACTNN_X86_AVX2
  if (__builtin_cpu_supports("avx2")) return pack_runs_avx2;
#endif
  return pack_runs_scalar<uint8_t>;
}

const PackRuns pack_runs = pick_pack_runs();

#if ACTNN_X86_AVX2
// Floats, one run per compare: _CMP_NEQ_UQ is true for NaN, as != is.
__attribute__((target("avx2"))) void pack_nonzero_runs_avx2(const float* x, int64_t n, uint8_t* out, int64_t b,
                                                            int64_t e) {
  const int64_t whole = std::min(e, n / 8);
  const __m256 zero = _mm256_setzero_ps();
  int64_t run = b;
  for (; run < whole; ++run)
    out[run] = uint8_t(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + run * 8), zero, _CMP_NEQ_UQ)));
  pack_runs_scalar(x, n, out, run, e);
}
#endif

using PackNonzeroRuns = void (*)(const float*, int64_t, uint8_t*, int64_t, int64_t);

PackNonzeroRuns pick_pack_nonzero_runs() {
#if ACTNN_X86_AVX2
  if (__builtin_cpu_supports("avx2")) return pack_nonzero_runs_avx2;
#endif
  return pack_runs_scalar<float>;
}

const PackNonzeroRuns pack_nonzero_runs = pick_pack_nonzero_runs();

}  // namespace

void pack_mask_cpu(const uint8_t* mask, int64_t n, uint8_t* out) {
  at::parallel_for(0, (n + 7) / 8, kGrainRuns, [&](int64_t b, int64_t e) { pack_runs(mask, n, out, b, e); });
}

void pack_nonzero_cpu(const float* x, int64_t n, uint8_t* out) {
  at::parallel_for(0, (n + 7) / 8, kGrainRuns, [&](int64_t b, int64_t e) { pack_nonzero_runs(x, n, out, b, e); });
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

namespace {

// Runs [b, e) of 8 values; the last run may be short.
void scale_runs_scalar(const float* grad, const uint8_t* packed, int64_t n, float if_set, float if_clear, float* out,
                       int64_t b, int64_t e) {
  for (int64_t run = b; run < e; ++run) {
    const int64_t i0 = run * 8;
    const int count = int(std::min<int64_t>(8, n - i0));
    const uint8_t bits = packed[run];
    for (int i = 0; i < count; ++i) {
      const float f = ((bits >> i) & 1u) ? if_set : if_clear;
      out[i0 + i] = f == 0.0f ? 0.0f : grad[i0 + i] * f;  // 0 exactly, even for Inf / NaN gradients
    }
  }
}

#if ACTNN_X86_AVX2
// The same on whole runs, 8 lanes at a time: each lane tests its bit of the
// run's byte and blends grad * if_set with grad * if_clear (a factor of 0
// gives 0 without multiplying), so results are the scalar loop's bits.
__attribute__((target("avx2"))) void scale_runs_avx2(const float* grad, const uint8_t* packed, int64_t n,
                                                     float if_set, float if_clear, float* out, int64_t b,
                                                     int64_t e) {
  const int64_t whole = std::min(e, n / 8);
  const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256 set = _mm256_set1_ps(if_set), clear = _mm256_set1_ps(if_clear), zero = _mm256_setzero_ps();
  const bool set_zero = if_set == 0.0f, clear_zero = if_clear == 0.0f;
  int64_t run = b;
  for (; run < whole; ++run) {
    const __m256i bits = _mm256_and_si256(_mm256_set1_epi32(packed[run]), lane_bit);
    const __m256 is_set = _mm256_castsi256_ps(_mm256_cmpeq_epi32(bits, lane_bit));
    const __m256 g = _mm256_loadu_ps(grad + run * 8);
    const __m256 a = set_zero ? zero : _mm256_mul_ps(g, set);
    const __m256 c = clear_zero ? zero : _mm256_mul_ps(g, clear);
    _mm256_storeu_ps(out + run * 8, _mm256_blendv_ps(c, a, is_set));
  }
  scale_runs_scalar(grad, packed, n, if_set, if_clear, out, run, e);
}
#endif

using ScaleRuns = void (*)(const float*, const uint8_t*, int64_t, float, float, float*, int64_t, int64_t);

ScaleRuns pick_scale_runs() {
#if ACTNN_X86_AVX2
  if (__builtin_cpu_supports("avx2")) return scale_runs_avx2;
#endif
  return scale_runs_scalar;
}

const ScaleRuns scale_runs = pick_scale_runs();

}  // namespace

void scale_by_mask_cpu(const float* grad, const uint8_t* packed, int64_t n, float if_set, float if_clear,
                       float* out) {
  at::parallel_for(0, (n + 7) / 8, kGrainRuns,
                   [&](int64_t b, int64_t e) { scale_runs(grad, packed, n, if_set, if_clear, out, b, e); });
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
