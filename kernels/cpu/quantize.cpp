// CPU per-group quantize and dequantize (format: quant_math.h).
//
// Work is split over groups with at::parallel_for; a group is processed in
// runs of 32 values: 8 Philox blocks give the 32 random words, the 32 codes are
// packed into `bits` little-endian 32-bit words. The hot loops are compiled
// twice (AVX2 and baseline x86-64) and picked at load time, so one binary runs
// everywhere and is vectorized where the CPU allows. Arithmetic goes through
// quant_math.h with -ffp-contract=off, which keeps the bytes equal to CUDA's.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

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

// 32 random words for stream indices e0 .. e0 + 31 (e0 a multiple of 4).
ACTNN_MULTIVERSION
void random_run(uint64_t seed, uint64_t offset, uint64_t e0, uint32_t* r) {
  const uint64_t k0 = e0 >> 2;
  for (int b = 0; b < kRun / 4; ++b) {
    const Philox4 p = philox_block(seed, offset, k0 + b);
    r[4 * b + 0] = p.v[0];
    r[4 * b + 1] = p.v[1];
    r[4 * b + 2] = p.v[2];
    r[4 * b + 3] = p.v[3];
  }
}

template <int B>
inline void pack_run(const uint32_t* q, uint8_t* out) {
  uint32_t words[B] = {};
  for (int i = 0; i < kRun; ++i) words[(i * B) / 32] |= q[i] << ((i * B) % 32);
  std::memcpy(out, words, sizeof words);  // little-endian, like the device
}

template <int B>
inline void unpack_run(const uint8_t* in, uint32_t* q) {
  uint32_t words[B];
  std::memcpy(words, in, sizeof words);
  for (int i = 0; i < kRun; ++i) q[i] = (words[(i * B) / 32] >> ((i * B) % 32)) & max_code(B);
}

ACTNN_MULTIVERSION
void min_max(const float* v, int len, float* mn_out, float* mx_out, bool* finite_out) {
  float mn = v[0], mx = v[0];
  uint32_t bad = 0;
  for (int i = 0; i < len; ++i) {
    mn = min_total(v[i], mn);
    mx = max_total(v[i], mx);
    bad |= (float_bits(v[i]) & 0x7f800000u) == 0x7f800000u;
  }
  *mn_out = mn;
  *mx_out = mx;
  *finite_out = bad == 0;
}

ACTNN_MULTIVERSION
void codes_run(const float* v, const uint32_t* r, int len, const GroupCode& g, uint32_t qmax,
               uint32_t* q) {
  for (int i = 0; i < kRun; ++i) q[i] = 0;
  if (!g.stochastic) {
    for (int i = 0; i < len; ++i) q[i] = g.fixed_code;
    return;
  }
  for (int i = 0; i < len; ++i) q[i] = stochastic_code(v[i], g, uniform24(r[i]), qmax);
}

template <Elem E, int B>
void quantize_group(const QuantizeArgs& a, int64_t n, int64_t gi, float* buf) {
  const QuantGeometry& geo = a.geo;
  const int64_t G = geo.group_size, D = geo.sample_numel;
  const int64_t j0 = gi * G;
  const int64_t len = std::min(G, D - j0);
  const int64_t base = n * D + j0;
  const int64_t g = n * geo.groups_per_sample + gi;

  load_run<E>(a.x, base, int(len), buf);
  float mn, mx;
  bool finite;
  min_max(buf, int(len), &mn, &mx, &finite);
  const GroupCode code = encode_group(mn, mx, finite, B, meta_is_half(E), E == Elem::Float32);
  a.lo[g] = code.lo_bits;
  a.scale[g] = code.scale_bits;

  uint8_t* out = a.codes + geo.sample_offset(n) + j0 * B / 8;
  const uint64_t e_base = uint64_t(n * geo.groups_per_sample * G + j0);
  uint32_t r[kRun], q[kRun];
  for (int64_t s = 0; s < G; s += kRun) {
    const int valid = int(std::max<int64_t>(0, std::min<int64_t>(kRun, len - s)));
    if (code.stochastic && valid > 0) random_run(a.seed, a.offset, e_base + s, r);
    codes_run(buf + s, r, valid, code, max_code(B), q);
    pack_run<B>(q, out + s * B / 8);
  }
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
  uint32_t q[kRun];
  for (int64_t s = 0; s < len; s += kRun) {
    unpack_run<B>(in + s * B / 8, q);
    const int valid = int(std::min<int64_t>(kRun, len - s));
    const int64_t base = n * D + j0 + s;
    if (E == Elem::Float32) {
      float* out = static_cast<float*>(a.out) + base;
      for (int i = 0; i < valid; ++i) out[i] = decode_value(q[i], d);
    } else {
      for (int i = 0; i < valid; ++i) store_elem(a.out, base + i, E, decode_value(q[i], d));
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

}  // namespace

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
