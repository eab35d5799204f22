// CUDA per-group quantize and dequantize (format: quant_math.h).
//
// One warp per group, grid-stride over groups. A group is small (G values,
// usually a few hundred) and needs a reduction (min/max) before any code can be
// computed, so a warp is the natural unit: the reduction is a handful of
// shuffles with no shared memory or block barriers, and groups of any size or
// count (mixed bits per sample included) map onto the same loop.
//
// The warp walks a group in steps of 128 values; lane l owns the 4 consecutive
// values 4l .. 4l+3 of a step. A Philox block serves 8 values, so a lane draws
// one block per step and uses half of it (the pair of lanes sharing a block
// both compute it: cheaper than a shuffle, and the kernel is bound by memory
// bandwidth, not by Philox), and the 4*b code bits of a lane are
// contiguous, so the codes of a step assemble into 32-bit words with a few
// OR-shuffles between the 8/b lanes that share a word. All arithmetic goes
// through quant_math.h, whose _rn intrinsics make the bytes equal to the CPU's.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "actnn/kernels/cuda.h"
#include "actnn/kernels/launch.h"

namespace actnn {
namespace kernels {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 32 * kWarpsPerBlock;
constexpr int kStep = 128;  // values per warp step: 4 per lane

template <Elem E>
constexpr int kElemBytes = E == Elem::Float32 ? 4 : 2;

// How many of the 4 values starting at group position p are real (not padding).
__device__ __forceinline__ int valid_of(int64_t len, int64_t p) {
  const int64_t r = len - p;
  return r <= 0 ? 0 : (r >= 4 ? 4 : int(r));
}

// Whether 4-value vector accesses are aligned throughout a group: every lane
// starts at a multiple of 4 values from the group start, so one check suffices.
template <Elem E>
__device__ __forceinline__ bool vector_aligned(const void* base, int64_t first) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(base) + uintptr_t(first) * kElemBytes<E>;
  return addr % (4 * kElemBytes<E>) == 0;
}

// Loads up to 4 consecutive values; missing ones read as 0 and are never used.
// The vector path only widens the memory access: conversions still go through
// load_elem, on a register copy.
template <Elem E>
__device__ __forceinline__ void load4(const void* x, int64_t i, int valid, bool vec, float v[4]) {
  if (vec && valid == 4) {
    if constexpr (E == Elem::Float32) {
      const float4 t = *reinterpret_cast<const float4*>(static_cast<const float*>(x) + i);
      v[0] = t.x;
      v[1] = t.y;
      v[2] = t.z;
      v[3] = t.w;
    } else {
      const uint2 t = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(x) + i);
      uint16_t h[4];
      memcpy(h, &t, sizeof h);
#pragma unroll
      for (int k = 0; k < 4; ++k) v[k] = load_elem(h, k, E);
    }
    return;
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = k < valid ? load_elem(x, i + k, E) : 0.0f;
}

template <Elem E>
__device__ __forceinline__ void store4(void* out, int64_t i, int valid, bool vec, const float v[4]) {
  if (vec && valid == 4) {
    if constexpr (E == Elem::Float32) {
      *reinterpret_cast<float4*>(static_cast<float*>(out) + i) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
      uint16_t h[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) store_elem(h, k, E, v[k]);
      uint2 t;
      memcpy(&t, h, sizeof t);
      *reinterpret_cast<uint2*>(static_cast<uint16_t*>(out) + i) = t;
    }
    return;
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (k < valid) store_elem(out, i + k, E, v[k]);
  }
}

// Code words are 4-byte aligned relative to the code buffer (every group starts
// at a multiple of G*b/8 bytes); the byte path covers a buffer that is not.
__device__ __forceinline__ void store_word(uint8_t* p, uint32_t w, bool aligned) {
  if (aligned) {
    *reinterpret_cast<uint32_t*>(p) = w;
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) p[k] = uint8_t(w >> (8 * k));
  }
}

__device__ __forceinline__ uint32_t load_word(const uint8_t* p, bool aligned) {
  if (aligned) return *reinterpret_cast<const uint32_t*>(p);
  uint32_t w = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) w |= uint32_t(p[k]) << (8 * k);
  return w;
}

template <Elem E, int B>
__device__ void quantize_group(const QuantizeArgs& a, int64_t g, int64_t n, int64_t gi,
                               int lane) {
  constexpr int kLanesPerWord = 8 / B;
  const QuantGeometry& geo = a.geo;
  const int64_t G = geo.group_size;
  const int64_t D = geo.sample_numel;
  const int64_t j0 = gi * G;                  // group start within the sample
  const int64_t len = min(G, D - j0);         // real values; the rest is padding
  const int64_t x0 = n * D + j0;              // group start in x
  const bool vec = vector_aligned<E>(a.x, x0);

  // Pass 1: minimum, maximum (total order, -0 < +0) and finiteness.
  float mn = INFINITY, mx = -INFINITY;
  bool bad = false;
  for (int64_t s0 = 0; s0 < len; s0 += kStep) {
    const int64_t p = s0 + 4 * lane;
    const int valid = valid_of(len, p);
    if (valid == 0) continue;
    float v[4];
    load4<E>(a.x, x0 + p, valid, vec, v);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (k < valid) {
        bad |= !is_finite(v[k]);
        mn = min_total(v[k], mn);
        mx = max_total(v[k], mx);
      }
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    mn = min_total(__shfl_xor_sync(kFullMask, mn, o), mn);
    mx = max_total(__shfl_xor_sync(kFullMask, mx, o), mx);
  }
  // With a NaN present the lanes may disagree on mn/mx, but encode_group then
  // ignores them.
  const bool finite = !__any_sync(kFullMask, bad);
  const GroupCode gc = encode_group(mn, mx, finite, B, meta_is_half(E), E == Elem::Float32);
  if (lane == 0) {
    a.lo[g] = gc.lo_bits;
    a.scale[g] = gc.scale_bits;
  }

  // Pass 2: codes, over the whole group so that padding gets code 0. Every lane
  // runs every step (the loop bound is warp-uniform) so the shuffles see the
  // full warp; lanes past the group's end contribute 0 and write nothing.
  uint8_t* codes = a.codes + geo.sample_offset(n) + j0 * B / 8;
  const bool word_aligned = reinterpret_cast<uintptr_t>(codes) % 4 == 0;
  const uint64_t e0 = uint64_t(n * geo.groups_per_sample * G + j0);  // stream index of j0
  const int shift = (4 * B * lane) % 32;
  for (int64_t s0 = 0; s0 < G; s0 += kStep) {
    const int64_t p = s0 + 4 * lane;
    const int valid = valid_of(len, p);
    uint32_t chunk = 0;
    if (valid > 0) {
      float v[4];
      load4<E>(a.x, x0 + p, valid, vec, v);
      uint32_t q[4];
      if (gc.stochastic) {
        const uint64_t e = e0 + uint64_t(p);  // a multiple of 4: one half block
        const Philox4 r = philox_block(a.seed, a.offset, e >> 3);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float u = uniform16(random_bits16(r, e + k));
          q[k] = k < valid ? stochastic_code(v[k], gc, u, max_code(B)) : 0u;
        }
      } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) q[k] = k < valid ? gc.fixed_code : 0u;
      }
      chunk = q[0] | (q[1] << B) | (q[2] << (2 * B)) | (q[3] << (3 * B));
    }
    chunk <<= shift;
#pragma unroll
    for (int o = 1; o < kLanesPerWord; o <<= 1) chunk |= __shfl_xor_sync(kFullMask, chunk, o);
    if (p < G && lane % kLanesPerWord == 0) {
      store_word(codes + (s0 * B) / 8 + 4 * (lane / kLanesPerWord), chunk, word_aligned);
    }
  }
}

template <Elem E, int B>
__device__ void dequantize_group(const DequantizeArgs& a, int64_t g, int64_t n, int64_t gi,
                                 int lane) {
  constexpr int kLanesPerWord = 8 / B;
  const QuantGeometry& geo = a.geo;
  const int64_t G = geo.group_size;
  const int64_t D = geo.sample_numel;
  const int64_t j0 = gi * G;
  const int64_t len = min(G, D - j0);
  const int64_t x0 = n * D + j0;
  const bool vec = vector_aligned<E>(a.out, x0);
  const GroupDecode d = decode_group(a.lo[g], a.scale[g], meta_is_half(E));
  const bool dither = a.dither && d.mode == 0;
  const uint64_t e0 = uint64_t(n * geo.groups_per_sample * G + j0);  // stream index of j0
  const uint8_t* codes = a.codes + geo.sample_offset(n) + j0 * B / 8;
  const bool word_aligned = reinterpret_cast<uintptr_t>(codes) % 4 == 0;
  const int shift = (4 * B * lane) % 32;
  for (int64_t s0 = 0; s0 < len; s0 += kStep) {
    const int64_t p = s0 + 4 * lane;
    const int valid = valid_of(len, p);
    if (valid == 0) continue;
    const uint32_t chunk =
        load_word(codes + (s0 * B) / 8 + 4 * (lane / kLanesPerWord), word_aligned) >> shift;
    float v[4];
    if (dither) {  // the random bits quantize_group drew for these 4 values
      const uint64_t e = e0 + uint64_t(p);
      const Philox4 r = philox_block(a.seed, a.offset, e >> 3);
#pragma unroll
      for (int k = 0; k < 4; ++k)
        v[k] = decode_dithered((chunk >> (k * B)) & max_code(B), uniform16(random_bits16(r, e + k)), d);
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) v[k] = decode_value((chunk >> (k * B)) & max_code(B), d);
    }
    store4<E>(a.out, x0 + p, valid, vec, v);
  }
}

__device__ __forceinline__ int64_t global_warp() {
  return (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
}
__device__ __forceinline__ int64_t warp_count() {
  return (int64_t(gridDim.x) * blockDim.x) >> 5;
}

template <Elem E, int B>
struct QuantizeGroup {
  static __device__ void run(const QuantizeArgs& a, int64_t g, int64_t n, int64_t gi, int lane) {
    quantize_group<E, B>(a, g, n, gi, lane);
  }
};

template <Elem E, int B>
struct DequantizeGroup {
  static __device__ void run(const DequantizeArgs& a, int64_t g, int64_t n, int64_t gi,
                             int lane) {
    dequantize_group<E, B>(a, g, n, gi, lane);
  }
};

// One warp per group, grid-stride over groups. Bits may differ per sample, so
// they are dispatched per group; the branch is warp-uniform. Any width other
// than 1, 2, 4 maps to 8, as on the CPU.
template <template <Elem, int> class Op, Elem E, typename Args>
__global__ void __launch_bounds__(kThreads) group_kernel(const Args a) {
  const int lane = int(threadIdx.x & 31);
  const int64_t P = a.geo.groups_per_sample;
  const int64_t groups = a.geo.num_groups();
  for (int64_t g = global_warp(); g < groups; g += warp_count()) {
    const int64_t n = g / P, gi = g % P;
    switch (a.geo.bits_of(n)) {
      case 1: Op<E, 1>::run(a, g, n, gi, lane); break;
      case 2: Op<E, 2>::run(a, g, n, gi, lane); break;
      case 4: Op<E, 4>::run(a, g, n, gi, lane); break;
      default: Op<E, 8>::run(a, g, n, gi, lane); break;
    }
  }
}

template <template <Elem, int> class Op, typename Args>
int launch_groups(const Args& a, Elem elem, void* stream) {
  const int64_t groups = a.geo.num_groups();
  if (groups <= 0) return 0;
  const LaunchPlan plan = plan_groups(groups);
  const dim3 grid(unsigned(plan.blocks));
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (elem) {
    case Elem::Float32: group_kernel<Op, Elem::Float32><<<grid, plan.threads, 0, s>>>(a); break;
    case Elem::Float16: group_kernel<Op, Elem::Float16><<<grid, plan.threads, 0, s>>>(a); break;
    case Elem::BFloat16: group_kernel<Op, Elem::BFloat16><<<grid, plan.threads, 0, s>>>(a); break;
  }
  return int(cudaGetLastError());
}

}  // namespace

int quantize_cuda(const QuantizeArgs& a, void* stream) {
  return launch_groups<QuantizeGroup>(a, a.elem, stream);
}

int dequantize_cuda(const DequantizeArgs& a, void* stream) {
  return launch_groups<DequantizeGroup>(a, a.elem, stream);
}

}  // namespace kernels
}  // namespace actnn
