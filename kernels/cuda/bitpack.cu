// CUDA 1-bit masks and narrow indices (format: quant_math.h, "generic bit
// streams"), plus the error-name helper for the CUDA entry points.
//
// Packing gives each thread one run of 8 values: a run fills whole bytes (1 for
// a mask, w for indices), so no two threads share an output byte and no atomics
// are needed. Unpacking gives each thread one value, so the writes of a warp
// are contiguous. All kernels are grid-stride loops over int64 indices, so any
// length fits the capped grid of plan_elementwise.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

#include "actnn/kernels/cuda.h"
#include "actnn/kernels/launch.h"

namespace actnn {
namespace kernels {
namespace {

__device__ __forceinline__ int64_t global_thread() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t thread_count() { return int64_t(gridDim.x) * blockDim.x; }

__global__ void pack_mask_kernel(const uint8_t* __restrict__ mask, int64_t n,
                                 uint8_t* __restrict__ out) {
  const int64_t runs = (n + 7) / 8;
  for (int64_t run = global_thread(); run < runs; run += thread_count()) {
    const int64_t i0 = run * 8;
    const int count = n - i0 < 8 ? int(n - i0) : 8;
    uint32_t byte = 0;
    for (int i = 0; i < count; ++i) byte |= uint32_t(mask[i0 + i] != 0) << i;
    out[run] = uint8_t(byte);
  }
}

__global__ void unpack_mask_kernel(const uint8_t* __restrict__ packed, int64_t n,
                                   uint8_t* __restrict__ out) {
  for (int64_t i = global_thread(); i < n; i += thread_count()) {
    out[i] = uint8_t((packed[i >> 3] >> (i & 7)) & 1u);
  }
}

__global__ void pack_index_kernel(const int64_t* __restrict__ index, int64_t n, int64_t limit,
                                  int w, uint8_t* __restrict__ out) {
  const int64_t runs = (n + 7) / 8;
  for (int64_t run = global_thread(); run < runs; run += thread_count()) {
    const int64_t i0 = run * 8;
    const int count = n - i0 < 8 ? int(n - i0) : 8;
    uint32_t v[8];
    for (int i = 0; i < count; ++i) {
      const int64_t x = index[i0 + i];
      if (x < 0 || x >= limit) {
        // Like PyTorch's device asserts: the stream is unusable, so stop the
        // context rather than write a silently wrong packing.
        printf("actnn::pack_index: index %lld at position %lld is outside [0, %lld)\n",
               static_cast<long long>(x), static_cast<long long>(i0 + i),
               static_cast<long long>(limit));
        __trap();
      }
      v[i] = uint32_t(x);
    }
    pack8(v, count, w, out + run * w);
  }
}

__global__ void unpack_index_kernel(const uint8_t* __restrict__ packed, int64_t n, int w,
                                    int64_t* __restrict__ out) {
  for (int64_t i = global_thread(); i < n; i += thread_count()) {
    out[i] = int64_t(unpack_value(packed, i, w));
  }
}

}  // namespace

int pack_mask_cuda(const uint8_t* mask, int64_t n, uint8_t* out, void* stream) {
  if (n <= 0) return 0;
  const LaunchPlan plan = plan_elementwise((n + 7) / 8);
  pack_mask_kernel<<<dim3(unsigned(plan.blocks)), plan.threads, 0,
                     static_cast<cudaStream_t>(stream)>>>(mask, n, out);
  return int(cudaGetLastError());
}

int unpack_mask_cuda(const uint8_t* packed, int64_t n, uint8_t* out, void* stream) {
  if (n <= 0) return 0;
  const LaunchPlan plan = plan_elementwise(n);
  unpack_mask_kernel<<<dim3(unsigned(plan.blocks)), plan.threads, 0,
                       static_cast<cudaStream_t>(stream)>>>(packed, n, out);
  return int(cudaGetLastError());
}

int pack_index_cuda(const int64_t* index, int64_t n, int64_t limit, int w, uint8_t* out,
                    void* stream) {
  if (n <= 0) return 0;
  const LaunchPlan plan = plan_elementwise((n + 7) / 8);
  pack_index_kernel<<<dim3(unsigned(plan.blocks)), plan.threads, 0,
                      static_cast<cudaStream_t>(stream)>>>(index, n, limit, w, out);
  return int(cudaGetLastError());
}

int unpack_index_cuda(const uint8_t* packed, int64_t n, int w, int64_t* out, void* stream) {
  if (n <= 0) return 0;
  const LaunchPlan plan = plan_elementwise(n);
  unpack_index_kernel<<<dim3(unsigned(plan.blocks)), plan.threads, 0,
                        static_cast<cudaStream_t>(stream)>>>(packed, n, w, out);
  return int(cudaGetLastError());
}

const char* cuda_error_name(int error) {
  return cudaGetErrorName(static_cast<cudaError_t>(error));
}

}  // namespace kernels
}  // namespace actnn
