// CUDA entry points, mirroring kernels.h. Each is one kernel launch on `stream`
// (a cudaStream_t) with no host synchronization; the return value is the
// cudaError_t of the launch (0 on success). Pointers are device pointers.
// Indices outside [0, limit) trap on the device, like PyTorch's device asserts.
#pragma once

#include <cstdint>

#include "actnn/kernels/kernels.h"

namespace actnn {
namespace kernels {

int quantize_cuda(const QuantizeArgs& a, void* stream);
int dequantize_cuda(const DequantizeArgs& a, void* stream);
int pack_mask_cuda(const uint8_t* mask, int64_t n, uint8_t* out, void* stream);
int unpack_mask_cuda(const uint8_t* packed, int64_t n, uint8_t* out, void* stream);
int pack_index_cuda(const int64_t* index, int64_t n, int64_t limit, int w, uint8_t* out,
                    void* stream);
int unpack_index_cuda(const uint8_t* packed, int64_t n, int w, int64_t* out, void* stream);
const char* cuda_error_name(int error);

}  // namespace kernels
}  // namespace actnn
