// The actnn runtime ops, callable from C++. Each is also registered with the
// dispatcher as actnn::<name> (schemas in runtime/ops.cpp), so TorchScript IR
// and Python (after torch.ops.load_library) reach the same code.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <array>
#include <cstdint>
#include <tuple>
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
// With p.dither, the values are decoded with subtractive dither (quant_math.h).
at::Tensor dequantize(const PackedActivation& p,
                      c10::optional<std::vector<int64_t>> shape = c10::nullopt,
                      c10::optional<c10::ScalarType> dtype = c10::nullopt);

// The variance of a value's rounding noise, per group of p ([N, P], float on
// p's device): step^2 / 12 when p decodes with dither (exact for every value);
// otherwise step^2 / 6, the mean of step^2 t (1 - t) over t in [0, 1), since a
// value's place t between two levels is not known; 0 for constant groups,
// which round-trip exactly.
at::Tensor rounding_variance(const PackedActivation& p);
// grad_input + grad_output * v * coeff, with v the rounding variance of each
// value of p (p's shape) and coeff broadcast to it (undefined: 1): the
// correction that makes a backward whose result holds the square of p's
// rounding noise unbiased (layer / group norm, softmax, tanh, sigmoid; see
// passes/torchscript/debias_backward.cpp). Written into grad_input when
// donate_input is set and it is overwritable.
at::Tensor debias_grad(const at::Tensor& grad_input, const at::Tensor& grad_output, const PackedActivation& p,
                       const at::Tensor& coeff, bool donate_input);
// grad_input + grad_output * coeff * (decoded^2 - d^2 + step^2 / 12), with d
// p decoded with dither and `decoded` what the backward read (p decoded as
// its site says): a backward whose one biased term is grad_output * decoded^2
// gets that term from the dithered square, which is unbiased, while its other
// terms keep the plain decoding (runtime/debias.cpp says why).
at::Tensor debias_square_grad(const at::Tensor& grad_input, const at::Tensor& grad_output, const at::Tensor& decoded,
                              const PackedActivation& p, const at::Tensor& coeff, bool donate_input);

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

// Buffer reuse in B (runtime/buffer_reuse.cpp). A tensor is overwritable
// when nothing else holds it: one reference, the only user of its storage,
// contiguous, no autograd history.
bool overwritable(const at::Tensor& t);
// a + b, computed into a donated operand that is overwritable (a first).
at::Tensor add_grads(const at::Tensor& a, const at::Tensor& b, bool donate_a, bool donate_b);
// A contiguous tensor of `sizes` whose values will not be read, standing in
// for an input an op needs only the shape of (convolution_backward computing
// the input gradient alone): the donor itself when it fits (shape, dtype,
// device, contiguous); otherwise, on the CPU, one with no memory behind it
// (an address-space reservation, not counted by the allocator), elsewhere a
// new uninitialized tensor.
at::Tensor placeholder(const c10::optional<at::Tensor>& donor, at::IntArrayRef sizes, c10::ScalarType dtype,
                       c10::Device device);
// ATen's convolution_backward; on the CPU with chunk_bytes > 0, over slices
// of the batch of at most chunk_bytes of input (or output gradient) each, so
// that the copies the convolution library makes of its operands (oneDNN
// reorders them into blocked layouts) are a slice's size, not the batch's.
// Weight and bias gradients are summed over the slices.
std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::OptionalIntArrayRef bias_sizes, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    bool transposed, at::IntArrayRef output_padding, int64_t groups, std::array<bool, 3> mask, int64_t chunk_bytes);
// ATen's native_batch_norm_backward; in training mode on CPU float tensors
// computed by our kernel, which writes the input gradient over `input` when
// donate_input is set and `input` is overwritable. With `rounded` (training
// mode), `input` is actnn::dequantize(*rounded), and the input gradient drops
// the bias its rounding noise brings (the kernel's noise_var).
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
    const c10::optional<at::Tensor>& save_mean, const c10::optional<at::Tensor>& save_invstd, bool train,
    double eps, std::array<bool, 3> mask, bool donate_input, const PackedActivation* rounded = nullptr);

}  // namespace actnn
