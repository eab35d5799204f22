// CPU per-group quantize and dequantize (format: quant_math.h).
//
// Work is split over groups with at::parallel_for (LibTorch's OpenMP backend,
// so this file is built with -fopenmp); a group is processed in runs of 32
// values, the 32 codes packed into `bits` little-endian 32-bit words; 8
// Philox blocks give the random bits of 64 values (two runs). The hot loops
// are compiled twice (AVX2 and baseline x86-64) and picked at load time, so one
// binary runs everywhere and is vectorized where the CPU allows; Philox has an
// explicit AVX2 version (8 blocks per vector) because compilers do not
// vectorize its 32x32->64-bit products. Arithmetic goes through quant_math.h with
// -ffp-contract=off, which keeps the bytes equal to CUDA's.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define ACTNN_X86_AVX2 1
#endif

#include "actnn/kernels/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ACTNN_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define ACTNN_MULTIVERSION
#endif

namespace actnn {
namespace kernels {
namespace {

constexpr int kRun = 32;

int64_t grain_groups(int64_t group_size) {
  return std::max<int64_t>(1, 32768 / group_size);
}

// Loads values [j0, j0 + len) of a sample into floats.
template <Elem E>
inline void load_run(const void* x, int64_t base, int len, float* out) {
  for (int i = 0; i < len; ++i) out[i] = load_elem(x, base + i, E);
}

// Philox blocks (e0 >> 3) .. (e0 >> 3) + 7 as 32 words in stream order: the
// random bits of stream indices e0 .. e0 + 63 (e0 a multiple of 8) are the
// 16-bit halves of r, low half first, i.e. r read as 64 little-endian uint16.
constexpr int kRandomValues = 64;

void random_run_scalar(uint64_t seed, uint64_t offset, uint64_t e0, uint32_t* r) {
  const uint64_t k0 = e0 >> 3;
  for (int b = 0; b < kRandomValues / 8; ++b) {
    const Philox4 p = philox_block(seed, offset, k0 + b);
    r[4 * b + 0] = p.v[0];
    r[4 * b + 1] = p.v[1];
    r[4 * b + 2] = p.v[2];
    r[4 * b + 3] = p.v[3];
  }
}

#if ACTNN_X86_AVX2
// The same 8 blocks, one per 32-bit lane, with the words transposed back to
// stream order at the end. Checked against philox4x32_10 by the unit tests
// (through the scalar reference of the whole format).
__attribute__((target("avx2"))) inline void mul_hi_lo(__m256i a, __m256i m, __m256i* hi,
                                                      __m256i* lo) {
  const __m256i even = _mm256_mul_epu32(a, m);                         // lanes 0, 2, 4, 6
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);  // lanes 1, 3, 5, 7
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

__attribute__((target("avx2"))) void random_run_avx2(uint64_t seed, uint64_t offset,
                                                     uint64_t e0, uint32_t* r) {
  const uint64_t k0 = e0 >> 3;
  // Counter words: c0/c1 = block index (low/high), c2/c3 = offset.
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i base = _mm256_set1_epi32(int(uint32_t(k0)));
  __m256i c0 = _mm256_add_epi32(base, lane);
  // A carry out of the low word (k0 + lane wraps) increments the high word.
  const __m256i wrapped =
      _mm256_cmpgt_epi32(_mm256_xor_si256(base, _mm256_set1_epi32(INT32_MIN)),
                         _mm256_xor_si256(c0, _mm256_set1_epi32(INT32_MIN)));
  __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(int(uint32_t(k0 >> 32))), wrapped);
  __m256i c2 = _mm256_set1_epi32(int(uint32_t(offset)));
  __m256i c3 = _mm256_set1_epi32(int(uint32_t(offset >> 32)));
  __m256i key0 = _mm256_set1_epi32(int(uint32_t(seed)));
  __m256i key1 = _mm256_set1_epi32(int(uint32_t(seed >> 32)));
  const __m256i m0 = _mm256_set1_epi32(int(0xD2511F53u)), m1 = _mm256_set1_epi32(int(0xCD9E8D57u));
  const __m256i w0 = _mm256_set1_epi32(int(0x9E3779B9u)), w1 = _mm256_set1_epi32(int(0xBB67AE85u));
  for (int round = 0; round < 10; ++round) {
    __m256i hi0, lo0, hi1, lo1;
    mul_hi_lo(c0, m0, &hi0, &lo0);
    mul_hi_lo(c2, m1, &hi1, &lo1);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), key0);
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), key1);
    c1 = lo1;
    c3 = lo0;
    key0 = _mm256_add_epi32(key0, w0);
    key1 = _mm256_add_epi32(key1, w1);
  }
  // Transpose: block b's four words go to r[4b .. 4b+3].
  const __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
  const __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
  const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
  const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
  auto* out = reinterpret_cast<__m256i*>(r);
  _mm256_storeu_si256(out + 0, _mm256_permute2x128_si256(u0, u1, 0x20));
  _mm256_storeu_si256(out + 1, _mm256_permute2x128_si256(u2, u3, 0x20));
  _mm256_storeu_si256(out + 2, _mm256_permute2x128_si256(u0, u1, 0x31));
  _mm256_storeu_si256(out + 3, _mm256_permute2x128_si256(u2, u3, 0x31));
}
#endif

using RandomRun = void (*)(uint64_t, uint64_t, uint64_t, uint32_t*);

RandomRun pick_random_run() {
#if ACTNN_X86_AVX2
  if (__builtin_cpu_supports("avx2")) return random_run_avx2;
#endif
  return random_run_scalar;
}

const RandomRun random_run = pick_random_run();

// 32 codes into B little-endian words (the device's layout): word w holds
// codes w * 32/B .. (w + 1) * 32/B - 1. Constant trip counts, so the loops
// unroll into constant shifts.
template <int B>
inline void pack_run(const uint32_t* q, uint8_t* out) {
  constexpr int kPerWord = 32 / B;
  uint32_t words[B];
  for (int w = 0; w < B; ++w) {
    uint32_t acc = 0;
    for (int k = 0; k < kPerWord; ++k) acc |= q[w * kPerWord + k] << (k * B);
    words[w] = acc;
  }
  std::memcpy(out, words, sizeof words);
}

template <int B>
inline void unpack_run(const uint8_t* in, uint32_t* q) {
  constexpr int kPerWord = 32 / B;
  uint32_t words[B];
  std::memcpy(words, in, sizeof words);
  for (int w = 0; w < B; ++w) {
    for (int k = 0; k < kPerWord; ++k) q[w * kPerWord + k] = (words[w] >> (k * B)) & max_code(B);
  }
}

// Minimum and maximum under min_total / max_total of len values, len a
// multiple of 8, in eight independent lanes (GCC vector extensions, which
// become AVX2 or SSE per target clone; compilers do not vectorize a single
// min/max accumulator because the reduction order matters for NaN and signed
// zeros). A zero result is then given the sign the total order picks
// (-0 < +0); NaN makes the group NaN, so which NaN-tainted value wins does not
// matter.
typedef float f32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));

ACTNN_MULTIVERSION
void min_max(const float* v, int len, float* mn_out, float* mx_out, bool* finite_out) {
  f32x8 mn, mx;
  std::memcpy(&mn, v, sizeof mn);
  mx = mn;
  u32x8 bad = {};
  for (int i = 0; i < len; i += 8) {
    f32x8 x;
    u32x8 xb;
    std::memcpy(&x, v + i, sizeof x);
    std::memcpy(&xb, v + i, sizeof xb);
    mn = x < mn ? x : mn;
    mx = x > mx ? x : mx;
    bad |= (u32x8)((xb & 0x7f800000u) == 0x7f800000u);
  }
  float lo = mn[0], hi = mx[0];
  uint32_t any_bad = 0;
  for (int k = 0; k < 8; ++k) {
    lo = mn[k] < lo ? mn[k] : lo;
    hi = mx[k] > hi ? mx[k] : hi;
    any_bad |= bad[k];
  }
  if (lo == 0.0f || hi == 0.0f) {
    bool neg_zero = false, pos_zero = false;
    for (int i = 0; i < len; ++i) {
      neg_zero |= float_bits(v[i]) == 0x80000000u;
      pos_zero |= float_bits(v[i]) == 0u;
    }
    if (lo == 0.0f) lo = neg_zero ? -0.0f : 0.0f;
    if (hi == 0.0f) hi = pos_zero ? 0.0f : -0.0f;
  }
  *mn_out = lo;
  *mx_out = hi;
  *finite_out = any_bad == 0;
}

// Codes of a run of 32 values, of which the first `valid` are real (the rest,
// padding, get code 0), packed into out; r holds their 16 random bits each.
// One multiversioned function with the width as a runtime switch, so that
// code computation and packing both get the AVX2 clone.
template <int B>
inline void codes_run(const float* v, const uint16_t* r, int valid, const GroupCode& g,
                      uint8_t* out) {
  uint32_t q[kRun];
  if (g.stochastic) {
    for (int i = 0; i < kRun; ++i) q[i] = stochastic_code(v[i], g, uniform16(r[i]), max_code(B));
  } else {
    for (int i = 0; i < kRun; ++i) q[i] = g.fixed_code;
  }
  for (int i = valid; i < kRun; ++i) q[i] = 0;
  pack_run<B>(q, out);
}

ACTNN_MULTIVERSION
void codes_run_bits(int bits, const float* v, const uint16_t* r, int valid, GroupCode g,
                    uint8_t* out) {
  switch (bits) {
    case 1: return codes_run<1>(v, r, valid, g, out);
    case 2: return codes_run<2>(v, r, valid, g, out);
    case 4: return codes_run<4>(v, r, valid, g, out);
    default: return codes_run<8>(v, r, valid, g, out);
  }
}

int64_t padded_length(int64_t len) { return (len + kRun - 1) / kRun * kRun; }

// The `len` values of a group from x[base] as floats, padded to whole runs:
// whole fp32 runs are read in place; otherwise they are loaded into buf
// (padded_length(len) floats) and padded with copies of the first value,
// which leaves the minimum, maximum and finiteness unchanged.
template <Elem E>
const float* group_values(const void* x, int64_t base, int64_t len, float* buf) {
  const int64_t padded = padded_length(len);
  if (E == Elem::Float32 && padded == len) return static_cast<const float*>(x) + base;
  load_run<E>(x, base, int(len), buf);
  for (int64_t i = len; i < padded; ++i) buf[i] = buf[0];
  return buf;
}

template <Elem E, int B>
void quantize_group(const QuantizeArgs& a, int64_t n, int64_t gi, float* buf) {
  const QuantGeometry& geo = a.geo;
  const int64_t G = geo.group_size, D = geo.sample_numel;
  const int64_t j0 = gi * G;
  const int64_t len = std::min(G, D - j0);
  const int64_t base = n * D + j0;
  const int64_t g = n * geo.groups_per_sample + gi;

  const float* v = group_values<E>(a.x, base, len, buf);
  float mn, mx;
  bool finite;
  if (a.ranges) {
    mn = a.ranges[2 * g];
    mx = a.ranges[2 * g + 1];
    finite = !(mn != mn);  // (NaN, NaN) marks a group holding Inf or NaN
  } else {
    min_max(v, int(padded_length(len)), &mn, &mx, &finite);
  }
  const GroupCode code = encode_group(mn, mx, finite, B, meta_is_half(E), E == Elem::Float32);
  a.lo[g] = code.lo_bits;
  a.scale[g] = code.scale_bits;

  uint8_t* out = a.codes + geo.sample_offset(n) + j0 * B / 8;
  const uint64_t e_base = uint64_t(n * geo.groups_per_sample * G + j0);
  uint32_t words[kRandomValues / 2];
  uint16_t r[kRandomValues];
  for (int64_t s = 0; s < G; s += kRun) {
    if (s >= len) {  // a run of padding only
      std::memset(out + s * B / 8, 0, kRun * B / 8);
      continue;
    }
    const int valid = int(std::min<int64_t>(kRun, len - s));
    if (code.stochastic && s % kRandomValues == 0) {
      random_run(a.seed, a.offset, e_base + s, words);
      std::memcpy(r, words, sizeof r);  // 16-bit halves in stream order (little-endian)
    }
    codes_run_bits(B, v + s, r + s % kRandomValues, valid, code, out + s * B / 8);
  }
}

// decode_value for a run. d is a local copy, so its mode is loop-invariant
// and -O3 unswitches the loop: the common mode-0 loop vectorizes.
ACTNN_MULTIVERSION
void decode_run(const uint32_t* q, GroupDecode d, float* v) {
  for (int i = 0; i < kRun; ++i) v[i] = decode_value(q[i], d);
}

// decode_dithered for a run of a normal group; r holds the values' random bits.
ACTNN_MULTIVERSION
void decode_run_dithered(const uint32_t* q, const uint16_t* r, GroupDecode d, float* v) {
  for (int i = 0; i < kRun; ++i) v[i] = decode_dithered(q[i], uniform16(r[i]), d);
}

template <Elem E, int B>
void dequantize_group(const DequantizeArgs& a, int64_t n, int64_t gi) {
  const QuantGeometry& geo = a.geo;
  const int64_t G = geo.group_size, D = geo.sample_numel;
  const int64_t j0 = gi * G;
  const int64_t len = std::min(G, D - j0);
  const int64_t g = n * geo.groups_per_sample + gi;
  const GroupDecode d = decode_group(a.lo[g], a.scale[g], meta_is_half(E));
  const uint8_t* in = a.codes + geo.sample_offset(n) + j0 * B / 8;
  // Dithered: the random bits quantize_group drew, regenerated the same way.
  const bool dither = a.dither && d.mode == 0;
  const uint64_t e_base = uint64_t(n * geo.groups_per_sample * G + j0);
  uint32_t words[kRandomValues / 2];
  uint16_t r[kRandomValues];
  uint32_t q[kRun];
  for (int64_t s = 0; s < len; s += kRun) {
    unpack_run<B>(in + s * B / 8, q);
    const int valid = int(std::min<int64_t>(kRun, len - s));
    const int64_t base = n * D + j0 + s;
    float v[kRun];
    if (dither) {
      if (s % kRandomValues == 0) {
        random_run(a.seed, a.offset, e_base + s, words);
        std::memcpy(r, words, sizeof r);
      }
      decode_run_dithered(q, r + s % kRandomValues, d, v);
    } else {
      decode_run(q, d, v);
    }
    if (E == Elem::Float32) {
      std::memcpy(static_cast<float*>(a.out) + base, v, sizeof(float) * valid);
    } else {
      for (int i = 0; i < valid; ++i) store_elem(a.out, base + i, E, v[i]);
    }
  }
}

template <template <Elem, int> class F, Elem E, typename... Args>
void dispatch_bits(int bits, Args&&... args) {
  switch (bits) {
    case 1: return F<E, 1>::run(args...);
    case 2: return F<E, 2>::run(args...);
    case 4: return F<E, 4>::run(args...);
    default: return F<E, 8>::run(args...);
  }
}

template <Elem E, int B>
struct QuantizeGroup {
  static void run(const QuantizeArgs& a, int64_t n, int64_t gi, float* buf) {
    quantize_group<E, B>(a, n, gi, buf);
  }
};

template <Elem E, int B>
struct DequantizeGroup {
  static void run(const DequantizeArgs& a, int64_t n, int64_t gi) {
    dequantize_group<E, B>(a, n, gi);
  }
};

template <Elem E>
void quantize_all(const QuantizeArgs& a) {
  const QuantGeometry& geo = a.geo;
  at::parallel_for(0, geo.num_groups(), grain_groups(geo.group_size), [&](int64_t b, int64_t e) {
    std::vector<float> buf(geo.group_size + kRun);
    for (int64_t g = b; g < e; ++g) {
      const int64_t n = g / geo.groups_per_sample;
      dispatch_bits<QuantizeGroup, E>(geo.bits_of(n), a, n, g % geo.groups_per_sample,
                                      buf.data());
    }
  });
}

template <Elem E>
void dequantize_all(const DequantizeArgs& a) {
  const QuantGeometry& geo = a.geo;
  at::parallel_for(0, geo.num_groups(), grain_groups(geo.group_size), [&](int64_t b, int64_t e) {
    for (int64_t g = b; g < e; ++g) {
      const int64_t n = g / geo.groups_per_sample;
      dispatch_bits<DequantizeGroup, E>(geo.bits_of(n), a, n, g % geo.groups_per_sample);
    }
  });
}

template <Elem E>
void group_range_squares_all(const void* x, const QuantGeometry& geo, double* out, float* range_out) {
  const int64_t n = geo.num_samples, p = geo.groups_per_sample, G = geo.group_size, D = geo.sample_numel;
  std::vector<double> ranges(size_t(n * p));
  at::parallel_for(0, n * p, grain_groups(G), [&](int64_t b, int64_t e) {
    std::vector<float> buf(G + kRun);
    for (int64_t g = b; g < e; ++g) {
      const int64_t s = g / p, j0 = (g % p) * G, len = std::min(G, D - j0);
      const float* v = group_values<E>(x, s * D + j0, len, buf.data());
      float mn, mx;
      bool finite;
      min_max(v, int(padded_length(len)), &mn, &mx, &finite);
      const double r = double(mx) - double(mn);
      ranges[size_t(g)] = finite ? r * r : std::numeric_limits<double>::infinity();
      if (range_out) {
        range_out[2 * g] = finite ? mn : std::numeric_limits<float>::quiet_NaN();
        range_out[2 * g + 1] = finite ? mx : std::numeric_limits<float>::quiet_NaN();
      }
    }
  });
  for (int64_t s = 0; s < n; ++s) {
    double sum = 0;
    for (int64_t g = 0; g < p; ++g) sum += ranges[size_t(s * p + g)];
    out[s] = sum;
  }
}

ACTNN_MULTIVERSION
float square_sum(const float* v, int len) {
  f32x8 acc = {};
  int i = 0;
  for (; i + 8 <= len; i += 8) {
    f32x8 x;
    std::memcpy(&x, v + i, sizeof x);
    acc += x * x;
  }
  float sum = 0;
  for (int k = 0; k < 8; ++k) sum += acc[k];
  for (; i < len; ++i) sum += v[i] * v[i];
  return sum;
}

template <Elem E>
void sample_square_norms_all(const void* x, int64_t n, int64_t d, double* out) {
  constexpr int64_t kChunk = 1024;
  const int64_t chunks = (d + kChunk - 1) / kChunk;
  std::vector<double> partial(size_t(n * chunks));
  at::parallel_for(0, n * chunks, 16, [&](int64_t b, int64_t e) {
    std::vector<float> buf(kChunk);
    for (int64_t c = b; c < e; ++c) {
      const int64_t s = c / chunks, j0 = (c % chunks) * kChunk, len = std::min(kChunk, d - j0);
      const float* v;
      if (E == Elem::Float32) {
        v = static_cast<const float*>(x) + s * d + j0;
      } else {
        load_run<E>(x, s * d + j0, int(len), buf.data());
        v = buf.data();
      }
      partial[size_t(c)] = double(square_sum(v, int(len)));
    }
  });
  for (int64_t s = 0; s < n; ++s) {
    double sum = 0;
    for (int64_t c = 0; c < chunks; ++c) sum += partial[size_t(s * chunks + c)];
    out[s] = sum;
  }
}

}  // namespace

void group_range_squares_cpu(const void* x, Elem elem, const QuantGeometry& geo, double* out, float* ranges) {
  switch (elem) {
    case Elem::Float32: return group_range_squares_all<Elem::Float32>(x, geo, out, ranges);
    case Elem::Float16: return group_range_squares_all<Elem::Float16>(x, geo, out, ranges);
    case Elem::BFloat16: return group_range_squares_all<Elem::BFloat16>(x, geo, out, ranges);
  }
}

void sample_square_norms_cpu(const void* x, Elem elem, int64_t n, int64_t d, double* out) {
  switch (elem) {
    case Elem::Float32: return sample_square_norms_all<Elem::Float32>(x, n, d, out);
    case Elem::Float16: return sample_square_norms_all<Elem::Float16>(x, n, d, out);
    case Elem::BFloat16: return sample_square_norms_all<Elem::BFloat16>(x, n, d, out);
  }
}

void quantize_cpu(const QuantizeArgs& a) {
  switch (a.elem) {
    case Elem::Float32: return quantize_all<Elem::Float32>(a);
    case Elem::Float16: return quantize_all<Elem::Float16>(a);
    case Elem::BFloat16: return quantize_all<Elem::BFloat16>(a);
  }
}

void dequantize_cpu(const DequantizeArgs& a) {
  switch (a.elem) {
    case Elem::Float32: return dequantize_all<Elem::Float32>(a);
    case Elem::Float16: return dequantize_all<Elem::Float16>(a);
    case Elem::BFloat16: return dequantize_all<Elem::BFloat16>(a);
  }
}

}  // namespace kernels
}  // namespace actnn
