// Upsampling (F.interpolate's nearest, linear, bilinear, bicubic and
// trilinear modes: the `.vec` overloads it calls, and the overloads with an
// explicit output size and one scale per dim, which torch 2.x's
// F.interpolate calls when given a size). Each backward reads only
// the input's and the output's sizes, so nothing but sizes is saved. grid_sample
// (aten::grid_sampler, 2-d and 3-d) saves its input and grid: ATen's
// backward reads both.
#include "rules.h"

namespace actnn {
namespace rules {
namespace {

// backward(grad, output_size, input_size, [align_corners,] scale per
// spatial dim...): the overload with explicit sizes and scales, which
// autograd's `.vec` backward resolves to (LibTorch 2.x has no `.vec`
// backward); the output's sizes stand for the forward's output_size or
// scale_factors, and each scale is the given factor or None. per_dim: the
// forward is that overload itself (its scales are its trailing inputs).
BackwardFn upsampleBackward(c10::Symbol backward, int64_t dims, bool align_corners, bool per_dim) {
  return [=](RuleContext& c) {
    if (!c.needsGrad(0)) return;
    std::vector<NamedValue> args{c.grad(0), c.helper("spatial_sizes", {c.saveSizes(c.output(0))}),
                                 c.saveSizes(c.input(0))};
    if (align_corners) args.emplace_back(c.save(c.input(2)));
    const size_t first_scale = align_corners ? 3 : 2;
    if (per_dim) {
      for (int64_t i = 0; i < dims; ++i) args.emplace_back(c.save(c.input(first_scale + size_t(i))));
    } else {
      Value* scales = c.save(c.input(first_scale));
      for (int64_t i = 0; i < dims; ++i) args.emplace_back(c.helper("scale_at", {scales, c.constant(i)}));
    }
    c.setGrad(0, c.op(backward, args));
  };
}

}  // namespace

void registerUpsampleRules(std::vector<RuleSpec>& rules) {
  using namespace c10;
  rules.push_back({"aten::grid_sampler", nullptr, [](RuleContext& c) {
    std::vector<Value*> args{c.grad(0), c.save(c.input(0)), c.save(c.input(1)), c.save(c.input(2)),
                             c.save(c.input(3)), c.save(c.input(4))};
    if (c.needsGrad(0)) c.setGrad(0, c.helper("grid_sampler_input_grad", args));
    if (c.needsGrad(1)) c.setGrad(1, c.helper("grid_sampler_grid_grad", args));
  }});
  const struct {
    const char* forward;  // with ".vec": that overload; alone: the per-dim one
    Symbol backward;
    int64_t dims;
    bool align_corners;
  } kinds[] = {
      {"aten::upsample_nearest1d", aten::upsample_nearest1d_backward, 1, false},
      {"aten::upsample_nearest2d", aten::upsample_nearest2d_backward, 2, false},
      {"aten::upsample_nearest3d", aten::upsample_nearest3d_backward, 3, false},
      {"aten::upsample_linear1d", aten::upsample_linear1d_backward, 1, true},
      {"aten::upsample_bilinear2d", aten::upsample_bilinear2d_backward, 2, true},
      {"aten::upsample_bicubic2d", aten::upsample_bicubic2d_backward, 2, true},
      {"aten::upsample_trilinear3d", aten::upsample_trilinear3d_backward, 3, true},
  };
  for (const auto& k : kinds) {
    // findRule takes the first match: the `.vec` rule, then the bare name
    // (which matches any overload: here the per-dim one).
    rules.push_back({std::string(k.forward) + ".vec", nullptr,
                     upsampleBackward(k.backward, k.dims, k.align_corners, /*per_dim=*/false)});
    rules.push_back({k.forward, nullptr, upsampleBackward(k.backward, k.dims, k.align_corners, /*per_dim=*/true)});
  }
}

}  // namespace rules
}  // namespace actnn
