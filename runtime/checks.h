// Argument checking and geometry shared by the CPU and CUDA op
// registrations, so both report the same errors for the same bad input.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "actnn/kernels/kernels.h"
#include "actnn/runtime/packed.h"

namespace actnn {

struct QuantPlan {
  kernels::QuantGeometry geo{};   // bits / byte_offset pointers left null
  kernels::Elem elem{};
  c10::ScalarType meta_dtype{};   // BFloat16 or Half
  std::vector<uint8_t> sample_bits;      // per sample, when bits are mixed
  std::vector<int64_t> sample_offsets;   // per sample, when bits are mixed
  int64_t code_bytes = 0;
};

// Validates dtype, bits and group size (errors name `op`, the argument and the
// value) and lays out the packed codes for a tensor of `shape`.
QuantPlan plan_quantize(const char* op, c10::ScalarType dtype, at::IntArrayRef shape,
                        at::IntArrayRef bits, int64_t group_size);

// Checks that codes / lo / scale have the sizes and types `plan` implies.
void check_packed_tensors(const char* op, const QuantPlan& plan, const at::Tensor& codes,
                          const at::Tensor& lo, const at::Tensor& scale);

void check_packed_parts(const char* op, const PackedActivation& p);

// The index width for `num_values` after checking it is in [1, 65536].
int checked_index_width(const char* op, int64_t num_values);

void check_packed_stream(const char* op, const at::Tensor& packed, int64_t count, int width);

// Checked inputs and allocated outputs of one quantize / dequantize call, the
// part both backends share. args() points the geometry's per-sample tables at
// the host copies in `plan`; the CUDA backend re-points them at device copies.
struct QuantizeCall {
  QuantPlan plan;
  at::Tensor x;  // contiguous input
  at::Tensor codes, lo, scale;
  uint64_t seed = 0, offset = 0;
  const float* ranges = nullptr;  // optional, CPU: kernels::QuantizeArgs::ranges
  kernels::QuantizeArgs args() const;
};
// With `buffer` (uint8, 1-d, contiguous, on x's device, at least
// packedSliceBytes(...) long) codes, lo and scale are views of it.
QuantizeCall prepare_quantize(const at::Tensor& x, at::IntArrayRef bits, int64_t group_size,
                              int64_t seed, int64_t offset,
                              const c10::optional<at::Tensor>& buffer = c10::nullopt,
                              int64_t alignment = 64);

// actnn::quantize_groups on a CPU tensor whose per-group (minimum, maximum)
// are already known (`ranges`, 2 floats per group, as
// kernels::group_range_squares_cpu writes them): the CPU kernel without its
// own min / max pass. Called directly, not through the dispatcher; recorded
// under the op's name for profiles.
std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_groups_cpu_with_ranges(
    const at::Tensor& x, at::IntArrayRef bits, int64_t group_size, int64_t seed, int64_t offset,
    const c10::optional<at::Tensor>& buffer, int64_t alignment, const std::vector<float>& ranges);

// `out` when given (checked: uint8, 1-d, contiguous, `bytes` long, on
// `like`'s device), else a new uint8 tensor of `bytes` bytes.
at::Tensor packed_output(const char* op, const c10::optional<at::Tensor>& out, int64_t bytes,
                         const at::Tensor& like);

struct DequantizeCall {
  QuantPlan plan;
  at::Tensor codes, lo, scale;  // contiguous
  at::Tensor out;
  bool dither = false;  // decode with the quantize call's (seed, offset)
  int64_t seed = 0, offset = 0;
  kernels::DequantizeArgs args() const;
};
DequantizeCall prepare_dequantize(const at::Tensor& codes, const at::Tensor& lo,
                                  const at::Tensor& scale, at::IntArrayRef bits,
                                  at::IntArrayRef shape, c10::ScalarType dtype, int64_t group_size,
                                  int64_t seed, int64_t offset, bool dither);

// A mask as one byte per element (0 or 1), contiguous.
at::Tensor mask_bytes(const at::Tensor& mask);
// The index tensor as contiguous int64 after checking its type, and its width.
at::Tensor index_values(const at::Tensor& index, int64_t num_values, int* width);

}  // namespace actnn
