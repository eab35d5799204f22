// The numeric core of actnn's compression, shared bit for bit by the CPU and
// CUDA kernels: Philox random numbers, 16-bit metadata conversions, per-group
// encoding of the minimum and scale, stochastic rounding, and the bit layout of
// packed codes. Nothing here depends on LibTorch.
//
// Layout of a packed activation (see also README "Packed activation format"):
//  * x has N samples of D values each (N = size of dim 0, or 1 for a tensor of
//    rank 0 or 1; D = numel / N). Each sample is split into
//    P = ceil(D / G) groups of G values; the last group of a sample is padded.
//    Groups never span samples.
//  * Sample n uses b_n bits per value (b_n in {1, 2, 4, 8}); its codes occupy
//    P * G * b_n / 8 bytes starting at byte offset_n = sum_{m<n} P * G * b_m / 8.
//    Within a sample, value j (0 <= j < P*G) is stored in bits
//    [j*b_n, (j+1)*b_n) of the sample's bytes, bit 0 being the least significant
//    bit of the first byte. Padding values have code 0.
//  * Per group, two 16-bit fields `lo` and `scale`, in the metadata type: IEEE
//    half for half input, bfloat16 otherwise. Their meaning:
//      scale > 0            normal group:   x' = q * (1 / scale) + lo
//      scale == +0          constant group: x' = lo (NaN when lo is NaN:
//                           the group held a NaN or an infinity)
//      scale sign bit set   exact fp32 constant: the bits of x' are
//                           (lo << 16) | ((scale & 0x7fff) << 1) | (q & 1)
//    The last form keeps constant fp32 groups exact although bf16 holds only
//    16 of their 32 bits; the missing bit rides in every value's code.
//
// Quantization (unbiased): lo is the group minimum rounded down to the metadata
// type, scale = (2^b - 1) / (max - lo) rounded toward zero, so every
// v = (x - lo) * scale lies in [0, 2^b - 1]. The code is q = floor(v + u) with u
// uniform in [0, 1) (16 random bits, see below), hence E[q] = v and E[x'] = x
// up to float rounding and a bias below 2^-16 of a step. The arithmetic is
// written so that no compiler contracts it into fused multiply-adds (host code
// is built with -ffp-contract=off; device code uses the _rn intrinsics), which
// is what makes CPU and CUDA agree bit for bit.
//
// Dithered decoding (optional, per packed value): normal groups decode to
// x' = (q + 1/2 - u) * (1 / scale) + lo, u being the very uniform that rounded
// the value (regenerated from the seed and stream index, never stored). Since
// q = floor(v + u), x' - x = (floor(v + u) - (v + u) + 1/2) / scale, which is
// uniform on (-step/2, step/2] whatever v is (subtractive dither, Schuchman
// 1964): the noise is unbiased, independent of x, and has variance exactly
// step^2 / 12, against plain decoding's step^2 t (1 - t) (t: where v sits
// between levels; step^2 / 6 on average, 0 for a value on a level, e.g. a
// ReLU zero). Readers that square the noise (batch norm's backward) need its
// variance value by value, which only the dithered form gives. q + 1/2 - u is
// exact in fp32 (q < 2^8, u a multiple of 2^-16). Constant groups decode as
// without dither.
//
// Random numbers: Philox4x32-10 keyed by the 64-bit seed. Value j of sample n
// has stream index e = n * P * G + j; its uniform u is the 16-bit half (e & 1)
// (low half first) of word ((e >> 1) & 3) of the Philox block whose 128-bit
// counter is (e >> 3 as 64 bits, offset as 64 bits), times 2^-16. One block
// serves 8 values. A 16-bit u makes rounding up happen with probability
// ceil(p * 2^16) / 2^16 instead of p: a bias below 2^-16 of a step (for 8-bit
// codes, below float rounding of the range), bought for half the Philox work,
// which dominates the CPU kernel's time.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define ACTNN_HD __host__ __device__ __forceinline__
#else
#define ACTNN_HD inline
#endif

namespace actnn {
namespace kernels {

// ---------------------------------------------------------------- arithmetic
// Single rounding per operation, never fused, identical on host and device.
ACTNN_HD float fsub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
ACTNN_HD float fadd(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
ACTNN_HD float fmul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
ACTNN_HD float fdiv(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

ACTNN_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}
ACTNN_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// Group minimum and maximum under the total order -0 < +0, so that any
// reduction order (CPU runs, CUDA warp shuffles) picks the same signed zero and
// the stored `lo` is byte-identical. NaN inputs make the group NaN (encode_group
// ignores mn/mx then), so their handling here does not matter.
ACTNN_HD float min_total(float a, float b) {
  return (a < b || (a == b && (float_bits(a) >> 31))) ? a : b;
}
ACTNN_HD float max_total(float a, float b) {
  return (a > b || (a == b && !(float_bits(a) >> 31))) ? a : b;
}

ACTNN_HD bool is_finite(float f) {
  return (float_bits(f) & 0x7f800000u) != 0x7f800000u;
}

// ------------------------------------------------------- 16-bit float formats
// bfloat16 and IEEE half, converted by bit manipulation so that the rounding
// direction is explicit and the same everywhere.

ACTNN_HD float bf16_to_float(uint16_t h) { return bits_float(uint32_t(h) << 16); }

// Round to nearest even (used for bf16 outputs).
ACTNN_HD uint16_t float_to_bf16_rne(float f) {
  uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x0040u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return uint16_t(x >> 16);
}

// Largest bf16 not above f (used for a group's minimum).
ACTNN_HD uint16_t float_to_bf16_down(float f) {
  uint32_t x = float_bits(f);
  uint16_t t = uint16_t(x >> 16);
  if ((x & 0xffffu) != 0 && (x & 0x80000000u)) ++t;  // negative: grow magnitude
  return t;
}

// Largest finite bf16 not above a positive f (used for a group's scale).
ACTNN_HD uint16_t float_to_bf16_toward_zero_finite(float f) {
  uint16_t t = uint16_t(float_bits(f) >> 16);
  return t >= 0x7f80u ? uint16_t(0x7f7fu) : t;
}

ACTNN_HD float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float mag = fmul(float(mant), 5.9604644775390625e-8f);  // 2^-24
    return bits_float(float_bits(mag) | sign);
  }
  if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

// Round to nearest even (used for half outputs).
ACTNN_HD uint16_t float_to_half_rne(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds to infinity
  if (ax < 0x38800000u) {                         // half subnormal or zero
    // ax * 2^24 is exact; add-and-subtract 2^23 rounds it to nearest even.
    const float scaled = fmul(bits_float(ax), 16777216.0f);
    const float rounded = fsub(fadd(scaled, 8388608.0f), 8388608.0f);
    return sign | uint16_t(rounded);
  }
  uint32_t r = ax - 0x38000000u;
  r += 0xfffu + ((r >> 13) & 1u);
  return sign | uint16_t(r >> 13);
}

// Largest finite half not above a positive f (used for a group's scale).
ACTNN_HD uint16_t float_to_half_toward_zero_finite(float f) {
  const uint32_t ax = float_bits(f) & 0x7fffffffu;
  if (ax >= 0x477fe000u) return 0x7bffu;  // 65504, the largest finite half
  if (ax < 0x38800000u) return uint16_t(fmul(bits_float(ax), 16777216.0f));
  return uint16_t((ax - 0x38000000u) >> 13);
}

// ------------------------------------------------------------- element kinds

enum class Elem : int { Float32 = 0, Float16 = 1, BFloat16 = 2 };

// Metadata is half for half input (the reference's choice) and bf16 otherwise:
// bf16 input can exceed half's range, and bf16 has fp32's exponent range.
ACTNN_HD bool meta_is_half(Elem e) { return e == Elem::Float16; }

ACTNN_HD float meta_to_float(uint16_t v, bool half) {
  return half ? half_to_float(v) : bf16_to_float(v);
}

ACTNN_HD float load_elem(const void* p, int64_t i, Elem e) {
  if (e == Elem::Float32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return e == Elem::Float16 ? half_to_float(h) : bf16_to_float(h);
}

ACTNN_HD void store_elem(void* p, int64_t i, Elem e, float v) {
  if (e == Elem::Float32) {
    static_cast<float*>(p)[i] = v;
  } else {
    static_cast<uint16_t*>(p)[i] =
        e == Elem::Float16 ? float_to_half_rne(v) : float_to_bf16_rne(v);
  }
}

// ------------------------------------------------------------------- Philox

struct Philox4 {
  uint32_t v[4];
};

// Philox4x32-10 (Salmon et al., SC'11): 128-bit counter, 64-bit key.
ACTNN_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                               uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c0;
    const uint64_t p1 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    c1 = uint32_t(p1);
    c3 = uint32_t(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The Philox block that holds the random bits of stream indices 8k .. 8k+7.
ACTNN_HD Philox4 philox_block(uint64_t seed, uint64_t offset, uint64_t k) {
  return philox4x32_10(uint32_t(k), uint32_t(k >> 32), uint32_t(offset),
                       uint32_t(offset >> 32), uint32_t(seed), uint32_t(seed >> 32));
}

// The 16 random bits of stream index e, from its block philox_block(.., e >> 3).
ACTNN_HD uint32_t random_bits16(const Philox4& block, uint64_t e) {
  return (block.v[(e >> 1) & 3u] >> (16u * uint32_t(e & 1u))) & 0xffffu;
}

// A uniform float in [0, 1) from 16 random bits (exact: k * 2^-16).
ACTNN_HD float uniform16(uint32_t bits16) { return float(bits16) * 1.52587890625e-5f; }

// ------------------------------------------------------------ group encoding

ACTNN_HD uint32_t max_code(int bits) { return (1u << bits) - 1u; }

struct GroupCode {
  uint16_t lo_bits;     // stored minimum
  uint16_t scale_bits;  // stored scale (see the header comment for its forms)
  float lo;             // lo_bits as float
  float scale;          // scale_bits as float, for normal groups
  bool stochastic;      // normal group: codes come from stochastic rounding
  uint32_t fixed_code;  // code of every valid value when !stochastic
};

// Encodes a group from its minimum and maximum. `finite` is false when a value
// is NaN or infinite. `exact_fp32` says that the input is fp32, so a constant
// group needs the split form to stay exact.
ACTNN_HD GroupCode encode_group(float mn, float mx, bool finite, int bits, bool half_meta,
                                bool exact_fp32) {
  GroupCode g{};
  const uint16_t nan_bits = half_meta ? 0x7e00u : 0x7fc0u;
  g.stochastic = false;
  g.fixed_code = 0;
  g.scale_bits = 0;
  g.scale = 0.0f;
  if (!finite) {
    g.lo_bits = nan_bits;
    g.lo = meta_to_float(nan_bits, half_meta);
    return g;
  }
  if (mn == mx) {  // constant group
    if (exact_fp32) {
      const uint32_t c = float_bits(mn);
      g.lo_bits = uint16_t(c >> 16);
      g.scale_bits = uint16_t(0x8000u | ((c >> 1) & 0x7fffu));
      g.fixed_code = c & 1u;
      g.lo = mn;
    } else {  // half or bf16 input: the value fits the metadata type exactly
      g.lo_bits = half_meta ? float_to_half_rne(mn) : float_to_bf16_rne(mn);
      g.lo = mn;
    }
    return g;
  }
  // fp32 input with bf16 metadata rounds the minimum down; half and bf16 input
  // hold their minimum exactly.
  g.lo_bits = half_meta ? float_to_half_rne(mn)
                        : (exact_fp32 ? float_to_bf16_down(mn) : float_to_bf16_rne(mn));
  g.lo = meta_to_float(g.lo_bits, half_meta);
  const float range = fsub(mx, g.lo);
  if (!is_finite(g.lo) || !is_finite(range)) {  // |values| near FLT_MAX
    g.lo_bits = nan_bits;
    g.lo = meta_to_float(nan_bits, half_meta);
    return g;
  }
  const float s = fdiv(float(max_code(bits)), range);
  g.scale_bits = half_meta ? float_to_half_toward_zero_finite(s)
                           : float_to_bf16_toward_zero_finite(s);
  if (g.scale_bits == 0) g.scale_bits = 1;  // smallest subnormal; never in practice
  g.scale = meta_to_float(g.scale_bits, half_meta);
  g.stochastic = true;
  return g;
}

ACTNN_HD uint32_t stochastic_code(float x, const GroupCode& g, float u, uint32_t qmax) {
  // x >= lo, so v >= 0 and truncation is floor.
  const float v = fadd(fmul(fsub(x, g.lo), g.scale), u);
  const uint32_t q = uint32_t(int32_t(v));
  return q > qmax ? qmax : q;
}

struct GroupDecode {
  int mode;            // 0: q * inv + lo, 1: lo, 2: split fp32 constant
  float lo;
  float inv;
  uint32_t split_hi;
};

ACTNN_HD GroupDecode decode_group(uint16_t lo_bits, uint16_t scale_bits, bool half_meta) {
  GroupDecode d{};
  if (!half_meta && (scale_bits & 0x8000u)) {
    d.mode = 2;
    d.split_hi = (uint32_t(lo_bits) << 16) | (uint32_t(scale_bits & 0x7fffu) << 1);
    return d;
  }
  d.lo = meta_to_float(lo_bits, half_meta);
  if (scale_bits == 0) {
    d.mode = 1;
    return d;
  }
  d.mode = 0;
  d.inv = fdiv(1.0f, meta_to_float(scale_bits, half_meta));
  return d;
}

ACTNN_HD float decode_value(uint32_t q, const GroupDecode& d) {
  if (d.mode == 0) return fadd(fmul(float(q), d.inv), d.lo);
  if (d.mode == 1) return d.lo;
  return bits_float(d.split_hi | (q & 1u));
}

// The dithered form; u is the uniform16 the value was rounded with.
ACTNN_HD float decode_dithered(uint32_t q, float u, const GroupDecode& d) {
  if (d.mode == 0) return fadd(fmul(fsub(fadd(float(q), 0.5f), u), d.inv), d.lo);
  return decode_value(q, d);
}

// ------------------------------------------------------------ layout helpers

ACTNN_HD bool valid_bits(int64_t b) { return b == 1 || b == 2 || b == 4 || b == 8; }

// Describes one packed tensor. Per-sample bits and byte offsets are either
// uniform (uniform_bits > 0) or read from arrays of length N (and N for the
// offsets; the total size is computed by the caller).
struct QuantGeometry {
  int64_t num_samples;
  int64_t sample_numel;
  int64_t group_size;
  int64_t groups_per_sample;
  int uniform_bits;
  const uint8_t* bits;         // per sample, when uniform_bits == 0
  const int64_t* byte_offset;  // per sample, when uniform_bits == 0

  ACTNN_HD int bits_of(int64_t n) const { return uniform_bits > 0 ? uniform_bits : bits[n]; }
  ACTNN_HD int64_t sample_bytes(int b) const { return groups_per_sample * group_size * b / 8; }
  ACTNN_HD int64_t sample_offset(int64_t n) const {
    return uniform_bits > 0 ? n * sample_bytes(uniform_bits) : byte_offset[n];
  }
  ACTNN_HD int64_t num_groups() const { return num_samples * groups_per_sample; }
};

// ----------------------------------------------------- generic bit streams
// Masks and narrow indices: value i occupies bits [i*w, (i+1)*w) of a byte
// stream, least significant bit first. A run of 8 values fills exactly w bytes,
// so runs of 8 can be packed independently.

// Packs up to 8 values of width w (1..16): `count` values, the rest of the run
// zero, writing ceil(count * w / 8) bytes (w bytes for a full run).
ACTNN_HD void pack8(const uint32_t* v, int count, int w, uint8_t* out) {
  const int nbytes = (count * w + 7) >> 3;
  uint64_t acc = 0;
  int have = 0;
  int written = 0;
  for (int i = 0; i < count; ++i) {
    acc |= uint64_t(v[i]) << have;
    have += w;
    while (have >= 8) {
      out[written++] = uint8_t(acc);
      acc >>= 8;
      have -= 8;
    }
  }
  if (written < nbytes) out[written] = uint8_t(acc);
}

// Reads value i (width w) from a packed stream.
ACTNN_HD uint32_t unpack_value(const uint8_t* in, int64_t i, int w) {
  const int64_t bit = i * w;
  const int64_t byte = bit >> 3;
  const int shift = int(bit & 7);
  uint32_t word = 0;
  const int nbytes = (shift + w + 7) >> 3;  // at most 3 for w <= 16
  for (int k = 0; k < nbytes; ++k) word |= uint32_t(in[byte + k]) << (8 * k);
  return (word >> shift) & ((1u << w) - 1u);
}

// The fewest bits that hold values 0 .. num_values - 1 (at least 1).
ACTNN_HD int index_width(int64_t num_values) {
  int w = 1;
  while ((int64_t(1) << w) < num_values) ++w;
  return w;
}

ACTNN_HD int64_t packed_stream_bytes(int64_t count, int w) { return (count * w + 7) / 8; }

}  // namespace kernels
}  // namespace actnn
