// Pointwise activations and math (abs, log, clamp, rounding, erf, sqrt, pow, exp, sin, cos, rsqrt),
// softmax / log_softmax and dropout. Each backward is
// the ATen *_backward op autograd uses, fed with the input or the result,
// whichever autograd saves. Dropout becomes native_dropout so its keep mask
// is a forward value (drawn from the same generator calls as aten::dropout);
// feature dropout becomes the ops ATen runs for it.
#include "rules.h"

namespace actnn {
namespace rules {
namespace {

// Rule for op(x, extra...) whose backward is `backward(grad, saved, extra...)`.
BackwardFn pointwise(c10::Symbol backward, bool uses_result, std::vector<size_t> extra = {},
                     std::vector<c10::IValue> trailing = {}) {
  return [=](RuleContext& c) {
    std::vector<NamedValue> args{c.grad(0), c.save(uses_result ? c.output(0) : c.input(0))};
    for (size_t i : extra) args.emplace_back(c.save(c.input(i)));
    for (const auto& t : trailing) args.emplace_back(c.constant(t));
    c.setGrad(0, c.op(backward, args));
  };
}

}  // namespace

void registerActivationRules(std::vector<RuleSpec>& rules) {
  using namespace c10;
  rules.push_back({"aten::relu", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::threshold_backward, {c.grad(0), c.save(c.output(0)), 0}));
  }});
  rules.push_back({"aten::hardtanh", nullptr, pointwise(aten::hardtanh_backward, false, {1, 2})});
  rules.push_back({"aten::leaky_relu", nullptr, pointwise(aten::leaky_relu_backward, false, {1}, {false})});
  rules.push_back({"aten::gelu", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::gelu_backward, {c.grad(0), c.save(c.input(0))},
                      {NamedValue("approximate", c.save(c.input(1)))}));
  }});
  rules.push_back({"aten::silu", nullptr, pointwise(aten::silu_backward, false)});
  rules.push_back({"aten::sigmoid", nullptr, pointwise(aten::sigmoid_backward, true)});
  rules.push_back({"aten::tanh", nullptr, pointwise(aten::tanh_backward, true)});
  rules.push_back({"aten::hardswish", nullptr, pointwise(aten::hardswish_backward, false)});
  rules.push_back({"aten::hardsigmoid", nullptr, pointwise(aten::hardsigmoid_backward, false)});
  // abs: the gradient times sgn(x), from two 1-bit masks (x > 0, x < 0)
  // made in F rather than from x itself, so it stays exact when x is not.
  rules.push_back({"aten::abs", nullptr, [](RuleContext& c) {
    Value* positive = c.save(c.forwardOp(aten::gt, {c.input(0), 0}));
    Value* negative = c.save(c.forwardOp(aten::lt, {c.input(0), 0}));
    Value* g = c.grad(0);
    c.setGrad(0, c.op(aten::where, {positive, g, c.op(aten::where, {negative, c.op(aten::neg, {g}), c.constant(0.0)})}));
  }});
  // log: the gradient times 1 / x, made in F: B's product is then linear in
  // the saved value (unbiased when it is quantized), unlike grad / x.
  rules.push_back({"aten::log", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::mul, {c.grad(0), c.save(c.forwardOp(aten::reciprocal, {c.input(0)}))}));
  }});
  // clamp, clamp_min, clamp_max: the gradient where min <= x <= max (autograd's
  // mask, bounds included), kept as a 1-bit mask made in F.
  auto clampRule = [](int min_input, int max_input) {
    return [=](RuleContext& c) {
      auto given = [&](int i) {
        return i >= 0 && c.input(size_t(i))->type()->kind() != TypeKind::NoneType;
      };
      Value* mask = nullptr;
      if (given(min_input)) mask = c.forwardOp(aten::ge, {c.input(0), c.input(size_t(min_input))});
      if (given(max_input)) {
        Value* below = c.forwardOp(aten::le, {c.input(0), c.input(size_t(max_input))});
        mask = mask ? c.forwardOp(aten::logical_and, {mask, below}) : below;
      }
      if (!mask) {  // clamp(x, None, None) passes x through
        c.setGrad(0, c.grad(0));
        return;
      }
      c.setGrad(0, c.op(aten::where, {c.save(mask), c.grad(0), c.constant(0.0)}));
    };
  };
  rules.push_back({"aten::clamp(Tensor self, Scalar? min=None, Scalar? max=None) -> Tensor", nullptr, clampRule(1, 2)});
  rules.push_back({"aten::clamp_min(Tensor self, Scalar min) -> Tensor", nullptr, clampRule(1, -1)});
  rules.push_back({"aten::clamp_max(Tensor self, Scalar max) -> Tensor", nullptr, clampRule(-1, 1)});
  // sin, cos, rsqrt (rotary embeddings, RMSNorm's decomposition): the
  // gradient times the derivative, made in F (cos x, -sin x, -rsqrt(x)^3 / 2)
  // so that B's product is linear in the saved value, as for log.
  rules.push_back({"aten::sin", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::mul, {c.grad(0), c.save(c.forwardOp(aten::cos, {c.input(0)}))}));
  }});
  rules.push_back({"aten::cos", nullptr, [](RuleContext& c) {
    Value* slope = c.forwardOp(aten::neg, {c.forwardOp(aten::sin, {c.input(0)})});
    c.setGrad(0, c.op(aten::mul, {c.grad(0), c.save(slope)}));
  }});
  rules.push_back({"aten::rsqrt", nullptr, [](RuleContext& c) {
    Value* cube = c.forwardOpAfter(aten::pow, {c.output(0), 3});
    Value* slope = c.forwardOpAfter(aten::mul, {cube, -0.5});
    c.setGrad(0, c.op(aten::mul, {c.grad(0), c.save(slope)}));
  }});
  // d exp(x) = g exp(x), from the result as autograd does.
  rules.push_back({"aten::exp", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::mul, {c.grad(0), c.save(c.output(0))}));
  }});
  // Rounding is flat almost everywhere: autograd's gradient is zero.
  for (const char* op : {"aten::round", "aten::floor", "aten::ceil", "aten::trunc"})
    rules.push_back({op, nullptr, [](RuleContext& c) { c.setGrad(0, c.op(aten::zeros_like, {c.grad(0)})); }});
  // d erf(x) / dx = 2 / sqrt(pi) * exp(-x^2), as autograd computes it.
  rules.push_back({"aten::erf", nullptr, [](RuleContext& c) {
    Value* x = c.save(c.input(0));
    Value* e = c.op(aten::exp, {c.op(aten::neg, {c.op(aten::mul, {x, x})})});
    c.setGrad(0, c.op(aten::mul, {c.grad(0), c.op(aten::mul, {e, c.constant(1.1283791670955126)})}));
  }});
  // d sqrt(x) = g / (2 sqrt(x)), from the result as autograd does.
  rules.push_back({"aten::sqrt", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::div, {c.grad(0), c.op(aten::mul, {c.save(c.output(0)), c.constant(2.0)})}));
  }});
  // d x^e = g e x^(e-1) for a constant number e (what autograd computes;
  // e = 0 gives zeros).
  rules.push_back({"aten::pow.Tensor_Scalar", nullptr, [](RuleContext& c) {
    auto e = torch::jit::toIValue(c.input(1));
    TORCH_CHECK(e && (e->isDouble() || e->isInt()), "aten::pow: the exponent must be a constant number");
    const double exponent = e->toScalar().toDouble();
    Value* x = c.save(c.input(0));
    Value* slope = exponent == 0 ? c.op(aten::zeros_like, {x})
                   : exponent == 1 ? c.op(aten::ones_like, {x})
                                   : c.op(aten::mul, {c.op(aten::pow, {x, c.constant(exponent - 1)}), c.constant(exponent)});
    c.setGrad(0, c.op(aten::mul, {c.grad(0), slope}));
  },
                   needsConstant(1, "the exponent")});
  auto softmaxLike = [](c10::Symbol backward) {
    return [=](RuleContext& c) {
      Value* x = c.input(0);
      Value* dtype = c.save(c.forwardOp(prim::dtype, {x}));
      c.setGrad(0, c.op(backward, {c.grad(0), c.save(c.output(0)), c.save(c.input(1)), dtype}));
    };
  };
  rules.push_back({"aten::softmax.int", nullptr, softmaxLike(aten::_softmax_backward_data)});
  rules.push_back({"aten::log_softmax.int", nullptr, softmaxLike(aten::_log_softmax_backward_data)});
  rules.push_back({"aten::dropout",
                   [](Node* n, Graph& f) {
                     return replaceNode(n, f, aten::native_dropout, {n->input(0), n->input(1), n->input(2)});
                   },
                   nullptr});
  // feature_dropout(input, p, train): canonicalize removed it unless train;
  // the noise (one value per sample and channel) becomes a forward value and
  // mul's rule saves it.
  rules.push_back({"aten::feature_dropout",
                   [](Node* n, Graph& f) {
                     auto train = torch::jit::toIValue(n->input(2));
                     TORCH_CHECK(train && train->isBool() && train->toBool(),
                                 "aten::feature_dropout needs a constant train=True after canonicalize");
                     Value* out;
                     {
                       torch::jit::WithInsertPoint guard(n);
                       out = torch::jit::insertGraph(f, *helperGraph("feature_dropout_train"),
                                                     {n->input(0), n->input(1)})
                                 .at(0);
                     }
                     out->setType(n->output()->type());
                     n->output()->replaceAllUsesWith(out);
                     Node* result = out->node();
                     n->destroy();
                     return result;
                   },
                   nullptr});
  rules.push_back({"aten::native_dropout", nullptr, [](RuleContext& c) {
    Value* scale = c.helper("dropout_scale", {c.save(c.input(1))});
    c.setGrad(0, c.op(aten::native_dropout_backward, {c.grad(0), c.save(c.output(1)), scale}));
  }});
}

}  // namespace rules
}  // namespace actnn
