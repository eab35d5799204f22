// Casts between floating-point types (to, type_as), where; add, sub, rsub, mul, div, neg with broadcasting: each gradient is summed
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
}

}  // namespace rules
}  // namespace actnn
