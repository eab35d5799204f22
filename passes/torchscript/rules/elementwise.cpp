// Casts between floating-point types (to, type_as), where, tril / triu; add, sub, rsub, mul, div, neg, maximum, minimum,
// masked_fill with broadcasting: each gradient is summed
// back to its operand's shape (sum_to_size is free when shapes agree).
#include "rules.h"

namespace actnn {
namespace rules {
namespace {

bool isTensor(Value* v) { return v->type()->isSubtypeOf(*c10::TensorType::get()); }

bool isOne(Value* v) {
  auto c = torch::jit::toIValue(v);
  return c && (c->isInt() || c->isDouble()) && c->toScalar().toDouble() == 1.0;
}

Value* toShapeOf(RuleContext& c, Value* g, size_t input) {
  return c.op(c10::aten::sum_to_size, {g, c.saveSizes(c.input(input))});
}

Value* times(RuleContext& c, Value* g, Value* alpha) {
  return isOne(alpha) ? g : c.op(c10::aten::mul, {g, c.save(alpha)});
}

// self (+|-) alpha * other
BackwardFn addSub(bool subtract) {
  return [=](RuleContext& c) {
    Value* g = c.grad(0);
    bool tensor_other = isTensor(c.input(1));
    if (c.needsGrad(0)) c.setGrad(0, tensor_other ? toShapeOf(c, g, 0) : g);
    if (tensor_other && c.needsGrad(1)) {
      Value* go = times(c, g, c.input(2));
      if (subtract) go = c.op(c10::aten::neg, {go});
      c.setGrad(1, toShapeOf(c, go, 1));
    }
  };
}

}  // namespace

void registerElementwiseRules(std::vector<RuleSpec>& rules) {
  using namespace c10;
  // tril / triu keep a triangle: the gradient keeps the same one.
  for (const char* op : {"aten::tril", "aten::triu"}) {
    rules.push_back({op, nullptr, [](RuleContext& c) {
      c.setGrad(0, c.op(c.node()->kind(), {c.grad(0), c.save(c.input(1))}));
    }});
  }
  // A cast between floating-point types: the gradient is cast back.
  rules.push_back({"aten::to.dtype", nullptr, [](RuleContext& c) {
    Value* dtype = c.save(c.forwardOp(prim::dtype, {c.input(0)}));
    c.setGrad(0, c.op(aten::to, {c.grad(0), dtype, false, false}));
  }});
  // type_as: the gradient goes back to self's dtype and device (other's
  // values are not read: only an empty stand-in with its metadata is kept).
  rules.push_back({"aten::type_as", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::type_as, {c.grad(0), c.saveShapeOnly(c.input(0))}));
  }});
  // The other spellings of a cast or a move (to(device), to(other),
  // to(dtype=, device=), ...): the gradient goes back to self's dtype and
  // device, from an empty stand-in with self's metadata.
  for (const char* op : {"aten::to.device", "aten::to.other", "aten::to.dtype_layout", "aten::to.prim_Device"}) {
    rules.push_back({op, nullptr, [](RuleContext& c) {
      c.setGrad(0, c.op(aten::type_as, {c.grad(0), c.saveShapeOnly(c.input(0))}));
    }});
  }
  // where(cond, a, b): the gradient goes to a where cond holds, to b elsewhere.
  rules.push_back({"aten::where.self", nullptr, [](RuleContext& c) {
    Value* cond = c.save(c.input(0));
    Value* zero = c.constant(0.0);
    if (c.needsGrad(1))
      c.setGrad(1, c.op(aten::sum_to_size, {c.op(aten::where, {cond, c.grad(0), zero}), c.saveSizes(c.input(1))}));
    if (c.needsGrad(2))
      c.setGrad(2, c.op(aten::sum_to_size, {c.op(aten::where, {cond, zero, c.grad(0)}), c.saveSizes(c.input(2))}));
  }});
  rules.push_back({"aten::add.Tensor", nullptr, addSub(false)});
  rules.push_back({"aten::add.Scalar", nullptr, addSub(false)});
  rules.push_back({"aten::sub.Tensor", nullptr, addSub(true)});
  rules.push_back({"aten::sub.Scalar", nullptr, addSub(true)});
  // rsub(self, other, alpha) = other - alpha * self
  auto rsub = [](RuleContext& c) {
    Value* g = c.grad(0);
    bool tensor_other = isTensor(c.input(1));
    if (c.needsGrad(0)) {
      Value* gs = c.op(aten::neg, {times(c, g, c.input(2))});
      c.setGrad(0, tensor_other ? toShapeOf(c, gs, 0) : gs);
    }
    if (tensor_other && c.needsGrad(1)) c.setGrad(1, toShapeOf(c, g, 1));
  };
  rules.push_back({"aten::rsub.Tensor", nullptr, rsub});
  rules.push_back({"aten::rsub.Scalar", nullptr, rsub});
  auto mul = [](RuleContext& c) {
    Value* g = c.grad(0);
    bool tensor_other = isTensor(c.input(1));
    if (c.needsGrad(0)) {
      Value* gs = c.op(aten::mul, {g, c.save(c.input(1))});
      c.setGrad(0, tensor_other ? toShapeOf(c, gs, 0) : gs);
    }
    if (tensor_other && c.needsGrad(1))
      c.setGrad(1, toShapeOf(c, c.op(aten::mul, {g, c.save(c.input(0))}), 1));
  };
  rules.push_back({"aten::mul.Tensor", nullptr, mul});
  rules.push_back({"aten::mul.Scalar", nullptr, mul});
  auto div = [](RuleContext& c) {
    Value* g = c.grad(0);
    bool tensor_other = isTensor(c.input(1));
    Value* other = c.save(c.input(1));
    if (c.needsGrad(0)) {
      Value* gs = c.op(aten::div, {g, other});
      c.setGrad(0, tensor_other ? toShapeOf(c, gs, 0) : gs);
    }
    if (tensor_other && c.needsGrad(1)) {
      // -grad * ((self / other) / other), as autograd computes it.
      Value* q = c.op(aten::div, {c.op(aten::div, {c.save(c.input(0)), other}), other});
      c.setGrad(1, toShapeOf(c, c.op(aten::mul, {c.op(aten::neg, {g}), q}), 1));
    }
  };
  rules.push_back({"aten::div.Tensor", nullptr, div});
  rules.push_back({"aten::div.Scalar", nullptr, div});
  rules.push_back({"aten::neg", nullptr, [](RuleContext& c) { c.setGrad(0, c.op(aten::neg, {c.grad(0)})); }});
  // maximum / minimum (and max / min of two tensors): the gradient goes to
  // the operand that won, half to each on a tie (autograd's rule); two 1-bit
  // masks made in F decide it.
  auto extremum = [](bool maximum) {
    return [=](RuleContext& c) {
      Value* wins = c.save(c.forwardOp(maximum ? aten::gt : aten::lt, {c.input(0), c.input(1)}));
      Value* tie = c.save(c.forwardOp(aten::eq, {c.input(0), c.input(1)}));
      Value* g = c.grad(0);
      Value* half = c.op(aten::mul, {g, c.constant(0.5)});
      if (c.needsGrad(0)) {
        Value* gs = c.op(aten::where, {wins, g, c.op(aten::where, {tie, half, c.constant(0.0)})});
        c.setGrad(0, toShapeOf(c, gs, 0));
      }
      if (c.needsGrad(1)) {
        Value* go = c.op(aten::where, {wins, c.constant(0.0), c.op(aten::where, {tie, half, g})});
        c.setGrad(1, toShapeOf(c, go, 1));
      }
    };
  };
  rules.push_back({"aten::maximum", nullptr, extremum(true)});
  rules.push_back({"aten::minimum", nullptr, extremum(false)});
  rules.push_back({"aten::max.other", nullptr, extremum(true)});
  rules.push_back({"aten::min.other", nullptr, extremum(false)});
  // masked_fill: no gradient where the mask is set; a tensor fill value gets
  // the sum of the gradient there.
  auto maskedFill = [](RuleContext& c) {
    Value* mask = c.save(c.input(1));
    if (c.needsGrad(0))
      c.setGrad(0, toShapeOf(c, c.op(aten::where, {mask, c.constant(0.0), c.grad(0)}), 0));
    if (isTensor(c.input(2)) && c.needsGrad(2))
      c.setGrad(2, toShapeOf(c, c.op(aten::where, {mask, c.grad(0), c.constant(0.0)}), 2));
  };
  rules.push_back({"aten::masked_fill.Scalar", nullptr, maskedFill});
  rules.push_back({"aten::masked_fill.Tensor", nullptr, maskedFill});
}

}  // namespace rules
}  // namespace actnn
