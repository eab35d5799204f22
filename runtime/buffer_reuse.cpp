// Ops that let B reuse the buffers of gradients and dequantized activations
// that die where they are read (the reuse-buffers pass inserts them; see
// passes/torchscript/reuse_buffers.cpp for where and why).
//
// Each takes `donate` flags the compiler sets when the graph reads a value
// for the last time; the runtime overwrites a donated tensor only when
// nothing else holds it (one reference, the only user of its storage,
// contiguous, no autograd history), so a wrong flag costs memory, never a
// wrong result.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <sys/mman.h>

#include <algorithm>

#include "actnn/kernels/kernels.h"
#include "actnn/runtime/ops.h"
#include "actnn/runtime/packed.h"
#include "checks.h"

namespace actnn {

bool overwritable(const at::Tensor& t) {
  return t.defined() && t.is_contiguous() && t.use_count() == 1 && t.storage().use_count() == 1 &&
         !t.requires_grad() && !t.is_inference();
}

at::Tensor add_grads(const at::Tensor& a, const at::Tensor& b, bool donate_a, bool donate_b) {
  const bool same = a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && a.device() == b.device();
  if (same && donate_a && overwritable(a)) return a.add_(b);
  if (same && donate_b && overwritable(b)) return b.add_(a);  // IEEE addition commutes: same bits
  return at::add(a, b);
}

namespace {

// A contiguous CPU tensor with no memory behind it until written: an
// anonymous private mapping reserves address space only (pages read as zero
// and take RAM only when written). It goes around the allocator, which it
// takes nothing from.
at::Tensor unbacked(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const size_t bytes = std::max<size_t>(1, size_t(c10::multiply_integers(sizes)) * options.dtype().itemsize());
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  TORCH_CHECK(p != MAP_FAILED, "actnn::placeholder: could not reserve ", bytes, " bytes of address space");
  return at::from_blob(
      p, sizes, [bytes](void* q) { munmap(q, bytes); }, options.device(at::kCPU));
}

}  // namespace

at::Tensor placeholder(const c10::optional<at::Tensor>& donor, at::IntArrayRef sizes, c10::ScalarType dtype,
                       c10::Device device) {
  if (donor && donor->defined() && donor->sizes() == sizes && donor->is_contiguous() &&
      donor->scalar_type() == dtype && donor->device() == device)
    return *donor;
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  return device.is_cpu() ? unbacked(sizes, options) : at::empty(sizes, options);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::OptionalIntArrayRef bias_sizes, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    bool transposed, at::IntArrayRef output_padding, int64_t groups, std::array<bool, 3> mask, int64_t chunk_bytes) {
  auto whole = [&](const at::Tensor& g, const at::Tensor& x) {
    return at::convolution_backward(g, x, weight, bias_sizes, stride, padding, dilation, transposed, output_padding,
                                    groups, mask);
  };
  const bool batched = input.dim() == weight.dim() && input.dim() >= 3 && grad_output.dim() == input.dim();
  if (chunk_bytes <= 0 || !input.device().is_cpu() || !batched || input.size(0) < 2) return whole(grad_output, input);
  const int64_t n = input.size(0);
  const int64_t sample_bytes = std::max<int64_t>(
      1, std::max(int64_t(input.nbytes()) / n, int64_t(grad_output.nbytes()) / std::max<int64_t>(1, grad_output.size(0))));
  const int64_t chunk = std::max<int64_t>(1, chunk_bytes / sample_bytes);
  if (chunk >= n) return whole(grad_output, input);
  at::Tensor gi = mask[0] ? at::empty(input.sizes(), input.options().memory_format(at::MemoryFormat::Contiguous))
                          : at::Tensor();
  at::Tensor gw, gb;
  for (int64_t b = 0; b < n; b += chunk) {
    const int64_t e = std::min(n, b + chunk);
    auto [ci, cw, cb] = whole(grad_output.slice(0, b, e), input.slice(0, b, e));
    if (mask[0]) gi.slice(0, b, e).copy_(ci);
    if (mask[1]) gw = gw.defined() ? gw.add_(cw) : cw;
    if (mask[2]) gb = gb.defined() ? gb.add_(cb) : cb;
  }
  return {gi, gw, gb};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
    const c10::optional<at::Tensor>& save_mean, const c10::optional<at::Tensor>& save_invstd, bool train,
    double eps, std::array<bool, 3> mask, bool donate_input, const PackedActivation* rounded) {
  const bool has_weight = weight && weight->defined();
  const bool has_stats = save_mean && save_mean->defined() && save_invstd && save_invstd->defined();
  TORCH_CHECK(!rounded || (train && has_stats && input.dim() >= 2 && at::IntArrayRef(rounded->original_shape()) == input.sizes()),
              "actnn::batch_norm_backward: a rounded input needs training mode, the batch statistics and the "
              "rounded value's shape (", at::IntArrayRef(rounded ? rounded->original_shape() : std::vector<int64_t>{}),
              "; the input has ", input.sizes(), ")");
  const bool ours = train && input.device().is_cpu() && input.scalar_type() == at::kFloat &&
                    grad_out.scalar_type() == at::kFloat && input.dim() >= 2 && has_stats &&
                    (!has_weight || weight->scalar_type() == at::kFloat);
  if (!ours) {
    auto [gi, gw, gb] = at::native_batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean,
                                                       save_invstd, train, eps, mask);
    if (rounded && gi.defined()) {
      // The kernel's correction as tensor ops: dy * v * w invstd^3 / M per channel.
      std::vector<int64_t> channel(size_t(input.dim()), 1);
      channel[1] = input.size(1);
      at::Tensor coeff = save_invstd->pow(3) / double(input.numel() / input.size(1));
      if (has_weight) coeff = coeff * *weight;
      gi = debias_grad(gi, grad_out, *rounded, coeff.reshape(channel), /*donate_input=*/true);
    }
    return {gi, gw, gb};
  }
  const int64_t n = input.size(0), c = input.size(1);
  TORCH_CHECK(grad_out.sizes() == input.sizes(), "actnn::batch_norm_backward: grad_out has shape ", grad_out.sizes(),
              ", input ", input.sizes());
  TORCH_CHECK(save_mean->numel() == c && save_invstd->numel() == c && (!has_weight || weight->numel() == c),
              "actnn::batch_norm_backward: statistics and weight must hold ", c, " channels");
  const at::Tensor dy = grad_out.contiguous();
  const bool in_place = mask[0] && donate_input && overwritable(input) && dy.data_ptr() != input.data_ptr();
  const at::Tensor x = input.contiguous();
  const at::Tensor mean = save_mean->contiguous(), invstd = save_invstd->contiguous();
  const at::Tensor w = has_weight ? weight->contiguous() : at::Tensor();
  at::Tensor gi = mask[0] ? (in_place ? x : at::empty_like(x)) : at::Tensor();
  at::Tensor gw = mask[1] ? at::empty({c}, x.options()) : at::Tensor();
  at::Tensor gb = mask[2] ? at::empty({c}, x.options()) : at::Tensor();
  kernels::BatchNormBackwardArgs args{dy.data_ptr<float>(),
                                      x.data_ptr<float>(),
                                      has_weight ? w.data_ptr<float>() : nullptr,
                                      mean.data_ptr<float>(),
                                      invstd.data_ptr<float>(),
                                      n,
                                      c,
                                      x.numel() / std::max<int64_t>(1, n * c),
                                      gi.defined() ? gi.data_ptr<float>() : nullptr,
                                      gw.defined() ? gw.data_ptr<float>() : nullptr,
                                      gb.defined() ? gb.data_ptr<float>() : nullptr};
  at::Tensor noise_var;
  if (rounded) {
    noise_var = rounding_variance(*rounded).contiguous();
    args.noise_var = noise_var.data_ptr<float>();
    args.noise_groups = noise_var.size(1);
    args.noise_group_size = rounded->group_size;
  }
  if (x.numel() > 0) kernels::batch_norm_backward_cpu(args);
  else {
    if (gw.defined()) gw.zero_();
    if (gb.defined()) gb.zero_();
  }
  return {gi, gw, gb};
}

}  // namespace actnn
