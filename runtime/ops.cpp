// Declares every actnn:: op schema and the PackedActivation class once
// (TORCH_LIBRARY); device kernels are registered in ops_cpu.cpp and
// ops_cuda.cpp. quantize / dequantize take or return the custom class, which
// carries no dispatch key, so they are composite: they unpack the class and
// call the device-dispatched *_groups ops.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include "actnn/runtime/arena.h"
#include "actnn/runtime/compression.h"
#include "actnn/runtime/ops.h"
#include "actnn/runtime/swap.h"
#include "checks.h"

namespace actnn {

namespace {

c10::OperatorHandle op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

c10::intrusive_ptr<PackedActivation> quantize(const at::Tensor& x, std::vector<int64_t> bits,
                                              int64_t group_size, int64_t seed, int64_t offset,
                                              const c10::optional<at::Tensor>& buffer, int64_t alignment) {
  static auto op = op_handle("actnn::quantize_groups")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, at::IntArrayRef, int64_t, int64_t, int64_t,
                           const c10::optional<at::Tensor>&, int64_t)>();
  auto [codes, lo, scale] = op.call(x, bits, group_size, seed, offset, buffer, alignment);
  auto p = c10::make_intrusive<PackedActivation>(codes, lo, scale, x.sizes().vec(), int64_t(x.scalar_type()),
                                                 std::move(bits), group_size);
  p->seed = seed;
  p->offset = offset;
  return p;
}

at::Tensor dequantize(const PackedActivation& p, c10::optional<std::vector<int64_t>> shape,
                      c10::optional<c10::ScalarType> dtype) {
  TORCH_CHECK(!shape || *shape == p.original_shape(), "actnn::dequantize: the packed value has shape ",
              shape_str(p.original_shape()), " but shape ", shape_str(*shape), " was requested");
  TORCH_CHECK(!dtype || *dtype == p.original_type(), "actnn::dequantize: the packed value has dtype ",
              p.original_type(), " but dtype ", *dtype, " was requested");
  static auto op = op_handle("actnn::dequantize_groups")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         at::IntArrayRef, at::IntArrayRef, c10::ScalarType, int64_t,
                                         int64_t, int64_t, bool)>();
  at::Tensor x = op.call(p.codes, p.lo, p.scale, p.bits, p.shape, p.scalar_type(), p.group_size, p.seed, p.offset,
                         p.dither);
  if (!p.lower_triangle_of.empty()) x = unpackLowerTriangle(x, p.lower_triangle_of);
  return p.restore_dtype < 0 ? x : x.to(p.original_type());
}

at::Tensor pack_mask(const at::Tensor& mask, const c10::optional<at::Tensor>& out) {
  static auto op = op_handle("actnn::pack_mask").typed<at::Tensor(const at::Tensor&)>();
  static auto op_out = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("actnn::pack_mask", "out")
                           .typed<at::Tensor(const at::Tensor&, at::Tensor&)>();
  if (!out) return op.call(mask);
  at::Tensor target = *out;
  return op_out.call(mask, target);
}

at::Tensor unpack_mask(const at::Tensor& packed, at::IntArrayRef shape) {
  static auto op =
      op_handle("actnn::unpack_mask").typed<at::Tensor(const at::Tensor&, at::IntArrayRef)>();
  return op.call(packed, shape);
}

at::Tensor pack_index(const at::Tensor& index, int64_t num_values, const c10::optional<at::Tensor>& out) {
  static auto op = op_handle("actnn::pack_index").typed<at::Tensor(const at::Tensor&, int64_t)>();
  static auto op_out = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("actnn::pack_index", "out")
                           .typed<at::Tensor(const at::Tensor&, int64_t, at::Tensor&)>();
  if (!out) return op.call(index, num_values);
  at::Tensor target = *out;
  return op_out.call(index, num_values, target);
}

at::Tensor unpack_index(const at::Tensor& packed, int64_t num_values, at::IntArrayRef shape) {
  static auto op = op_handle("actnn::unpack_index")
                       .typed<at::Tensor(const at::Tensor&, int64_t, at::IntArrayRef)>();
  return op.call(packed, num_values, shape);
}

// grad * (mask bit ? if_set : if_clear), straight from the packed mask on
// the CPU (float); elsewhere through the unpacked mask.
at::Tensor scale_by_mask(const at::Tensor& grad, const at::Tensor& packed, double if_set, double if_clear,
                         bool donate) {
  if (grad.device().is_cpu() && grad.scalar_type() == at::kFloat) {
    check_packed_stream("actnn::scale_by_mask", packed, grad.numel(), 1);
    // A donated gradient nobody else holds (no other reference, no view of
    // its storage) is overwritten instead of allocating the result.
    const bool in_place = donate && overwritable(grad);
    const at::Tensor g = grad.contiguous(), p = packed.contiguous();
    at::Tensor out = in_place ? grad : at::empty_like(g);
    kernels::scale_by_mask_cpu(g.data_ptr<float>(), p.data_ptr<uint8_t>(), g.numel(), float(if_set),
                               float(if_clear), out.data_ptr<float>());
    return out;
  }
  const at::Tensor mask = unpack_mask(packed, grad.sizes());
  auto scaled = [&](double f) { return f == 0 ? at::zeros_like(grad) : grad * f; };
  return at::where(mask, scaled(if_set), scaled(if_clear));
}

namespace {

using PackedPtr = c10::intrusive_ptr<PackedActivation>;

PackedPtr quantize_op(const at::Tensor& x, std::vector<int64_t> bits, int64_t group_size,
                      int64_t seed, int64_t offset) {
  return quantize(x, std::move(bits), group_size, seed, offset);
}

at::Tensor dequantize_op(const PackedPtr& p, c10::optional<std::vector<int64_t>> shape,
                         c10::optional<c10::ScalarType> dtype) {
  return dequantize(*p, std::move(shape), dtype);
}

using StatePtr = c10::intrusive_ptr<CompressionState>;

using ArenaPtr = c10::intrusive_ptr<Arena>;
using SwappedPtr = c10::intrusive_ptr<SwappedValue>;

PackedPtr compress_op(const at::Tensor& x, const StatePtr& state, int64_t site, int64_t channel_dim,
                      const c10::optional<at::Tensor>& weight, const ArenaPtr& arena, int64_t slot) {
  return state->compress(x, site, channel_dim, weight, arena, slot);
}

// A packed tensor of `bytes` bytes written by `pack` into the arena slot when
// the step is planned, else allocated as usual; either way the slot records
// its size for the next plan.
template <typename Pack>
at::Tensor packIntoSlot(const ArenaPtr& arena, int64_t slot, int64_t bytes, Pack pack) {
  at::Tensor slice = arena->acquire(slot, bytes);
  at::Tensor out = pack(slice.defined() ? c10::optional<at::Tensor>(slice) : c10::nullopt);
  arena->recordFixed(slot, bytes);
  return out;
}

at::Tensor pack_mask_arena_op(const at::Tensor& mask, const ArenaPtr& arena, int64_t slot) {
  return packIntoSlot(arena, slot, (mask.numel() + 7) / 8,
                      [&](const c10::optional<at::Tensor>& out) { return pack_mask(mask, out); });
}

at::Tensor pack_pool_index_op(const at::Tensor& indices, at::IntArrayRef input_sizes, at::IntArrayRef kernel,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  return pack_pool_index(indices, input_sizes, kernel, stride, padding, dilation);
}

at::Tensor pack_pool_index_arena_op(const at::Tensor& indices, at::IntArrayRef input_sizes, at::IntArrayRef kernel,
                                    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                    const ArenaPtr& arena, int64_t slot) {
  return packIntoSlot(arena, slot, pool_index_bytes(indices.numel(), kernel), [&](const c10::optional<at::Tensor>& out) {
    return pack_pool_index(indices, input_sizes, kernel, stride, padding, dilation, out);
  });
}

at::Tensor observe_grad_op(const at::Tensor& grad, const StatePtr& state, int64_t site) {
  state->observeGrad(grad, site);
  return grad;
}

template <typename F>
std::vector<F> siteField(const StatePtr& self, F CompressionState::Site::*field) {
  std::lock_guard<std::mutex> lock(self->mutex);
  std::vector<F> out;
  for (const auto& s : self->sites) out.push_back(s.*field);
  return out;
}

}  // namespace

TORCH_LIBRARY(actnn, m) {
  // Compression state of a compiled module (runtime/compression.cpp).
  m.class_<CompressionState>("CompressionState")
      .def(torch::init<double, int64_t, std::vector<CompressionState::SiteConfig>>())
      .def("budget_bits", [](const StatePtr& self) { return self->budget_bits; })
      .def("group_size", [](const StatePtr& self) { return self->group_size; })
      .def("steps", [](const StatePtr& self) { return self->steps; })
      .def("site_names", [](const StatePtr& self) { return siteField(self, &CompressionState::Site::name); })
      .def("site_bits", [](const StatePtr& self) { return siteField(self, &CompressionState::Site::bits); })
      .def("site_floors", [](const StatePtr& self) { return siteField(self, &CompressionState::Site::floor); })
      .def("site_budgets", [](const StatePtr& self) { return siteField(self, &CompressionState::Site::budget); })
      .def("last_bits", [](const StatePtr& self) { return siteField(self, &CompressionState::Site::last_bits); })
      .def_pickle([](const StatePtr& self) { return self->save(); },
                  [](c10::IValue saved) { return CompressionState::load(saved); });

  // Static memory plan of the packed buffers (runtime/arena.cpp).
  m.class_<Arena>("Arena")
      .def(torch::init<int64_t, std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>>>())
      .def("slot_names",
           [](const ArenaPtr& self) {
             std::vector<std::string> out;
             for (const auto& s : self->slots) out.push_back(s.name);
             return out;
           })
      .def("arena_bytes", [](const ArenaPtr& self) { return self->plan.arena_bytes; })
      .def("lower_bound_bytes", [](const ArenaPtr& self) { return self->plan.lower_bound_bytes; })
      .def("heuristic", [](const ArenaPtr& self) { return self->plan.heuristic; })
      .def("planned_bytes", [](const ArenaPtr& self) { return self->planned_bytes; })
      .def("used_bytes", [](const ArenaPtr& self) { return self->used_bytes; })
      .def("planned_steps", [](const ArenaPtr& self) { return self->planned_steps; })
      .def("measured_steps", [](const ArenaPtr& self) { return self->measured_steps; })
      .def("overflows", [](const ArenaPtr& self) { return self->overflows; })
      .def_pickle([](const ArenaPtr& self) { return self->pickle(); },
                  [](Arena::Pickled p) { return Arena::unpickle(std::move(p)); });

  // A packed value swapped to host memory (runtime/swap.cpp).
  m.class_<SwappedValue>("SwappedValue")
      .def("on_host", [](const SwappedPtr& self) { return self->on_host; })
      .def("host_bytes", [](const SwappedPtr& self) { return self->host_bytes; });

  m.class_<PackedActivation>("PackedActivation")
      .def("nbytes", [](const PackedPtr& self) { return self->nbytes(); })
      .def("original_nbytes", [](const PackedPtr& self) { return self->original_nbytes(); })
      .def("shape", [](const PackedPtr& self) { return self->original_shape(); })
      .def("bits", [](const PackedPtr& self) { return self->bits; })
      .def("group_size", [](const PackedPtr& self) { return self->group_size; })
      .def("seed", [](const PackedPtr& self) { return self->seed; })
      .def("offset", [](const PackedPtr& self) { return self->offset; })
      .def("dither", [](const PackedPtr& self) { return self->dither; })
      .def_pickle([](const PackedPtr& self) { return self->state(); },
                  [](PackedActivation::State s) { return PackedActivation::from_state(std::move(s)); });

  // Device-dispatched kernels (CPU: ops_cpu.cpp, CUDA: ops_cuda.cpp).
  // `buffer` / `out`: write into a preallocated slice (an arena slot).
  m.def("quantize_groups(Tensor x, int[] bits, int group_size, int seed, int offset,"
        " Tensor(a!)? buffer=None, int alignment=64) -> (Tensor codes, Tensor lo, Tensor scale)");
  // dither: decode with the subtractive dither of the quantize call that
  // used (seed, offset) (kernels/include/actnn/kernels/quant_math.h).
  m.def("dequantize_groups(Tensor codes, Tensor lo, Tensor scale, int[] bits, int[] shape,"
        " ScalarType dtype, int group_size, int seed=0, int offset=0, bool dither=False) -> Tensor");
  m.def("pack_mask(Tensor mask) -> Tensor");
  m.def("pack_mask.out(Tensor mask, *, Tensor(a!) out) -> Tensor(a!)");
  m.def("unpack_mask(Tensor packed, int[] shape) -> Tensor");
  m.def("pack_index(Tensor index, int num_values) -> Tensor");
  m.def("pack_index.out(Tensor index, int num_values, *, Tensor(a!) out) -> Tensor(a!)");
  m.def("unpack_index(Tensor packed, int num_values, int[] shape) -> Tensor");

  // Composite ops over the custom class.
  m.def("quantize(Tensor x, int[] bits, int group_size=256, int seed=0, int offset=0)"
        " -> __torch__.torch.classes.actnn.PackedActivation",
        quantize_op);
  m.def("dequantize(__torch__.torch.classes.actnn.PackedActivation p, int[]? shape=None,"
        " ScalarType? dtype=None) -> Tensor",
        dequantize_op);

  // What rewritten training graphs call (runtime/compression.cpp,
  // runtime/pool_index.cpp).
  m.def("compress(Tensor x, __torch__.torch.classes.actnn.CompressionState state, int site,"
        " int channel_dim=1, Tensor? weight=None) -> __torch__.torch.classes.actnn.PackedActivation",
        [](const at::Tensor& x, const StatePtr& state, int64_t site, int64_t channel_dim,
           const c10::optional<at::Tensor>& weight) { return state->compress(x, site, channel_dim, weight); });
  // Level L5: the same, written into `slot` of the step's arena.
  m.def("compress.arena(Tensor x, __torch__.torch.classes.actnn.CompressionState state, int site,"
        " int channel_dim, Tensor? weight, __torch__.torch.classes.actnn.Arena arena, int slot)"
        " -> __torch__.torch.classes.actnn.PackedActivation",
        compress_op);
  // donate: the caller does not use `grad` again, so the result may take its
  // buffer (done only when nothing else holds it).
  m.def("scale_by_mask(Tensor grad, Tensor packed_mask, float if_set, float if_clear, bool donate=False) -> Tensor",
        scale_by_mask);
  // Buffer reuse in B (runtime/buffer_reuse.cpp); donate flags as above.
  m.def("add_grads(Tensor a, Tensor b, bool donate_a=False, bool donate_b=False) -> Tensor", add_grads);
  m.def("placeholder(Tensor? donor, int[] sizes, ScalarType dtype, Device device) -> Tensor", placeholder);
  m.def("convolution_backward(Tensor grad_output, Tensor input, Tensor weight, int[]? bias_sizes, int[] stride,"
        " int[] padding, int[] dilation, bool transposed, int[] output_padding, int groups, bool[3] output_mask,"
        " int chunk_bytes=0) -> (Tensor, Tensor, Tensor)",
        convolution_backward);
  // rounded: `input` is its dequantized copy; the input gradient drops the
  // bias the rounding noise brings (runtime/debias.cpp).
  m.def("batch_norm_backward(Tensor grad_out, Tensor input, Tensor? weight, Tensor? running_mean,"
        " Tensor? running_var, Tensor? save_mean, Tensor? save_invstd, bool train, float eps, bool[3] output_mask,"
        " bool donate_input=False, __torch__.torch.classes.actnn.PackedActivation? rounded=None)"
        " -> (Tensor, Tensor, Tensor)",
        [](const at::Tensor& grad_out, const at::Tensor& input, const c10::optional<at::Tensor>& weight,
           const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
           const c10::optional<at::Tensor>& save_mean, const c10::optional<at::Tensor>& save_invstd, bool train,
           double eps, std::array<bool, 3> mask, bool donate_input, const c10::optional<PackedPtr>& rounded) {
          return batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd,
                                     train, eps, mask, donate_input, rounded ? rounded->get() : nullptr);
        });
  m.def("rounding_variance(__torch__.torch.classes.actnn.PackedActivation p) -> Tensor",
        [](const PackedPtr& p) { return rounding_variance(*p); });
  m.def("debias_grad(Tensor grad_input, Tensor grad_output, __torch__.torch.classes.actnn.PackedActivation rounded,"
        " Tensor? coeff=None, bool donate_input=False) -> Tensor",
        [](const at::Tensor& gi, const at::Tensor& go, const PackedPtr& p, const c10::optional<at::Tensor>& coeff,
           bool donate) { return debias_grad(gi, go, *p, coeff ? *coeff : at::Tensor(), donate); });
  m.def("debias_square_grad(Tensor grad_input, Tensor grad_output, Tensor decoded,"
        " __torch__.torch.classes.actnn.PackedActivation rounded, Tensor? coeff=None, bool donate_input=False)"
        " -> Tensor",
        [](const at::Tensor& gi, const at::Tensor& go, const at::Tensor& decoded, const PackedPtr& p,
           const c10::optional<at::Tensor>& coeff, bool donate) {
          return debias_square_grad(gi, go, decoded, *p, coeff ? *coeff : at::Tensor(), donate);
        });
  m.def("pack_mask.arena(Tensor mask, __torch__.torch.classes.actnn.Arena arena, int slot) -> Tensor",
        pack_mask_arena_op);
  m.def("observe_grad(Tensor(a) grad, __torch__.torch.classes.actnn.CompressionState state, int site)"
        " -> Tensor(a)",
        observe_grad_op);
  m.def("pack_pool_index(Tensor indices, int[] input_sizes, int[] kernel, int[] stride, int[] padding,"
        " int[] dilation) -> Tensor",
        pack_pool_index_op);
  m.def("pack_pool_index.arena(Tensor indices, int[] input_sizes, int[] kernel, int[] stride, int[] padding,"
        " int[] dilation, __torch__.torch.classes.actnn.Arena arena, int slot) -> Tensor",
        pack_pool_index_arena_op);
  m.def("unpack_pool_index(Tensor packed, int[] output_sizes, int[] input_sizes, int[] kernel, int[] stride,"
        " int[] padding, int[] dilation) -> Tensor",
        unpack_pool_index);

  // Level L4 (runtime/swap.cpp): F moves each packed value to host memory
  // right after producing it; B starts bringing it back a few uses ahead
  // (swap_in, into an arena slot at L5) and waits for it right before use.
  m.def("swap_out(__torch__.torch.classes.actnn.PackedActivation p) -> __torch__.torch.classes.actnn.SwappedValue",
        [](const PackedPtr& p) { return swapOut(c10::IValue(p)); });
  m.def("swap_out.tensor(Tensor t) -> __torch__.torch.classes.actnn.SwappedValue",
        [](const at::Tensor& t) { return swapOut(c10::IValue(t)); });
  m.def("swap_in(__torch__.torch.classes.actnn.SwappedValue s) -> __torch__.torch.classes.actnn.SwappedValue",
        [](const SwappedPtr& s) { return swapIn(s, ArenaPtr(), -1); });
  m.def("swap_in.arena(__torch__.torch.classes.actnn.SwappedValue s, __torch__.torch.classes.actnn.Arena arena,"
        " int slot) -> __torch__.torch.classes.actnn.SwappedValue",
        swapIn);
  m.def("swap_wait(__torch__.torch.classes.actnn.SwappedValue s) -> __torch__.torch.classes.actnn.PackedActivation",
        [](const SwappedPtr& s) {
          c10::IValue v = swapWait(s);
          TORCH_CHECK(v.isCustomClass(), "actnn::swap_wait: the swapped value is a tensor; use swap_wait_tensor");
          return v.toCustomClass<PackedActivation>();
        });
  m.def("swap_wait_tensor(__torch__.torch.classes.actnn.SwappedValue s) -> Tensor", [](const SwappedPtr& s) {
    c10::IValue v = swapWait(s);
    TORCH_CHECK(v.isTensor(), "actnn::swap_wait_tensor: the swapped value is a packed activation; use swap_wait");
    return v.toTensor();
  });
}

}  // namespace actnn
