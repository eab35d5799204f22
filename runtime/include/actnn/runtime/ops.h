// The actnn runtime ops, callable from C++. Each is also registered with the
// dispatcher as actnn::<name> (schemas in runtime/ops.cpp), so TorchScript IR
// and Python (after torch.ops.load_library) reach the same code.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <vector>

#include "actnn/runtime/packed.h"

namespace actnn {

// Quantizes x per group of `group_size` values within each sample (dim 0),
// with stochastic rounding keyed by (seed, offset). `bits` holds one width for
// every sample or one per sample (mixed precision), each 1, 2, 4 or 8.
// With `buffer`, the packed parts are views of it (see packedSliceBytes).
c10::intrusive_ptr<PackedActivation> quantize(const at::Tensor& x, std::vector<int64_t> bits,
                                              int64_t group_size = 256, int64_t seed = 0,
                                              int64_t offset = 0,
                                              const c10::optional<at::Tensor>& buffer = c10::nullopt,
                                              int64_t alignment = 64);

// Restores the tensor; `shape` and `dtype`, when given, must be what was packed.
at::Tensor dequantize(const PackedActivation& p,
                      c10::optional<std::vector<int64_t>> shape = c10::nullopt,
                      c10::optional<c10::ScalarType> dtype = c10::nullopt);

// 1 bit per element (set where mask != 0), uint8 of ceil(numel / 8) bytes,
// written into `out` when given.
at::Tensor pack_mask(const at::Tensor& mask, const c10::optional<at::Tensor>& out = c10::nullopt);
at::Tensor unpack_mask(const at::Tensor& packed, at::IntArrayRef shape);
// grad * (bit i of the packed mask ? if_set : if_clear): relu / hardtanh /
// leaky_relu backward from a packed mask, in one pass on the CPU. donate:
// `grad` is not used again, and when nothing else holds it (no other
// reference or view), its buffer holds the result.
at::Tensor scale_by_mask(const at::Tensor& grad, const at::Tensor& packed_mask, double if_set, double if_clear,
                         bool donate = false);

// Indices in [0, num_values) stored in the fewest bits that hold num_values.
at::Tensor pack_index(const at::Tensor& index, int64_t num_values,
                      const c10::optional<at::Tensor>& out = c10::nullopt);
at::Tensor unpack_index(const at::Tensor& packed, int64_t num_values, at::IntArrayRef shape);

// Max-pooling argmax offsets (flat within the input plane, as
// max_pool*_with_indices return them) stored as window-relative indices in
// the fewest bits that hold prod(kernel); pooling geometry as in ATen.
at::Tensor pack_pool_index(const at::Tensor& indices, at::IntArrayRef input_sizes, at::IntArrayRef kernel,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                           const c10::optional<at::Tensor>& out = c10::nullopt);
// The bytes pack_pool_index returns for `count` indices of a window of
// prod(kernel) values.
int64_t pool_index_bytes(int64_t count, at::IntArrayRef kernel);
at::Tensor unpack_pool_index(const at::Tensor& packed, at::IntArrayRef output_sizes, at::IntArrayRef input_sizes,
                             at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation);

}  // namespace actnn
