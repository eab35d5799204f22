// What B needs to keep a backward unbiased when it reads a stochastically
// rounded value nonlinearly (passes/torchscript/debias_backward.cpp emits the
// calls; the README's "Unbiased normalization backward" has the derivation).
//
// A value rounded at step s lands on one of its two neighbouring levels with
// the probabilities that make it unbiased; its noise has variance
// s^2 t (1 - t), t its place between the levels. t is not stored, and no
// function of the code alone estimates t (1 - t) without bias; for a value
// placed uniformly between its levels the expected variance given its code is
// s^2 / 6 whichever level it landed on. A value decoded with subtractive
// dither (PackedActivation::dither) has noise uniform on (-s/2, s/2] whatever
// x is: variance s^2 / 12 exactly, value by value. rounding_variance reports
// the one that applies, per group.
#include <ATen/ATen.h>

#include "actnn/runtime/ops.h"
#include "actnn/runtime/packed.h"

namespace actnn {

at::Tensor rounding_variance(const PackedActivation& p) {
  const at::Tensor scale = p.scale.to(at::kFloat);
  const at::Tensor step = scale.reciprocal();
  // scale 0: a constant group; a negative scale: an exact fp32 constant.
  return at::where(scale > 0, step * step / (p.dither ? 12 : 6), at::zeros_like(scale));
}

namespace {

// [N, P] per group -> p's shape, one entry per value.
at::Tensor perValue(const at::Tensor& per_group, const PackedActivation& p) {
  const int64_t n = sampleCount(p.shape), groups = per_group.size(1), g = p.group_size;
  int64_t numel = 1;
  for (int64_t d : p.shape) numel *= d;
  if (numel == 0) return at::zeros(p.original_shape(), per_group.options());
  // contiguous(): a fresh tensor the caller may write (reshape alone may
  // return a view of the expansion, whose values share memory).
  at::Tensor v = per_group.unsqueeze(2).expand({n, groups, g}).contiguous().view({n, groups * g})
                     .narrow(1, 0, numel / n).reshape(p.shape);
  // A packed lower triangle: the zeros above it are exact.
  return p.lower_triangle_of.empty() ? v : unpackLowerTriangle(v, p.lower_triangle_of);
}

}  // namespace

at::Tensor debias_grad(const at::Tensor& grad_input, const at::Tensor& grad_output, const PackedActivation& p,
                       const at::Tensor& coeff, bool donate_input) {
  TORCH_CHECK(grad_input.sizes() == at::IntArrayRef(p.original_shape()) && grad_output.sizes() == grad_input.sizes(),
              "actnn::debias_grad: the gradients have shapes ", grad_input.sizes(), " and ", grad_output.sizes(),
              ", the rounded value ", at::IntArrayRef(p.original_shape()));
  at::Tensor correction = perValue(rounding_variance(p), p).mul_(grad_output);
  if (coeff.defined()) correction.mul_(coeff);
  correction = correction.to(grad_input.scalar_type());  // v is float; half gradients stay half
  if (donate_input && overwritable(grad_input)) return grad_input.add_(correction);
  return grad_input + correction;
}

// Softmax's backward decodes its output plainly: the values that sit on a
// level -- its zeros and its row maximum -- then round-trip exactly, where
// dither would give each noise of step^2 / 12 (on a causally masked attention
// row that noise swamps the gradient). Its only biased term is dy * x'^2 (the
// self term of its sum; tanh's 1 - y^2 and sigmoid's y - y^2 have the same
// form): E[x'^2] = x^2 + v with v = step^2 t (1 - t), unknown. The dithered decoding of the same codes
// x~ has E[x~^2] = x^2 + step^2 / 12 exactly, so swapping the term for
// x~^2 - step^2 / 12 makes it unbiased, and the other terms keep plain
// decoding's noise. (Where the site is dithered anyway x' = x~ and this is
// debias_grad's dy * step^2 / 12.)
at::Tensor debias_square_grad(const at::Tensor& grad_input, const at::Tensor& grad_output, const at::Tensor& decoded,
                              const PackedActivation& p, const at::Tensor& coeff, bool donate_input) {
  TORCH_CHECK(grad_input.sizes() == at::IntArrayRef(p.original_shape()) &&
                  grad_output.sizes() == grad_input.sizes() && decoded.sizes() == grad_input.sizes(),
              "actnn::debias_square_grad: the gradients have shapes ", grad_input.sizes(), " and ",
              grad_output.sizes(), ", the decoded value ", decoded.sizes(), ", the rounded value ",
              at::IntArrayRef(p.original_shape()));
  PackedActivation dithered_form = p;
  dithered_form.dither = true;
  const at::Tensor dithered = dequantize(dithered_form).to(at::kFloat);
  const at::Tensor plain = decoded.to(at::kFloat);
  at::Tensor correction = perValue(rounding_variance(dithered_form), p);
  correction.add_(plain * plain).sub_(dithered * dithered).mul_(grad_output);
  if (coeff.defined()) correction.mul_(coeff);
  correction = correction.to(grad_input.scalar_type());
  if (donate_input && overwritable(grad_input)) return grad_input.add_(correction);
  return grad_input + correction;
}

}  // namespace actnn
