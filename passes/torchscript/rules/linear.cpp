// linear, addmm, mm, bmm, matmul. linear's weight gradient flattens the
// leading dimensions (grad^T @ input), as autograd's addmm/matmul do.
#include "rules.h"

namespace actnn {
namespace rules {
namespace {

bool isOne(Value* v) {
  auto c = torch::jit::toIValue(v);
  return c && (c->isInt() || c->isDouble()) && c->toScalar().toDouble() == 1.0;
}

Value* scaled(RuleContext& c, Value* g, Value* factor) {
  return isOne(factor) ? g : c.op(c10::aten::mul, {g, c.save(factor)});
}

}  // namespace

void registerLinearRules(std::vector<RuleSpec>& rules) {
  using namespace c10;
  rules.push_back({"aten::linear", nullptr, [](RuleContext& c) {
    Value* g = c.grad(0);
    if (c.needsGrad(0)) c.setGrad(0, c.op(aten::matmul, {g, c.save(c.input(1))}));
    if (c.needsGrad(1)) c.setGrad(1, c.helper("linear_weight_grad", {g, c.save(c.input(0))}));
    if (c.needsGrad(2)) c.setGrad(2, c.helper("linear_bias_grad", {g}));
  }});
  rules.push_back({"aten::addmm", nullptr, [](RuleContext& c) {
    Value* g = c.grad(0);
    if (c.needsGrad(0))
      c.setGrad(0, c.op(aten::sum_to_size, {scaled(c, g, c.input(3)), c.saveSizes(c.input(0))}));
    if (c.needsGrad(1)) {
      Value* bt = c.op(aten::t, {c.save(c.input(2))});
      c.setGrad(1, scaled(c, c.op(aten::mm, {g, bt}), c.input(4)));
    }
    if (c.needsGrad(2)) {
      Value* at = c.op(aten::t, {c.save(c.input(1))});
      c.setGrad(2, scaled(c, c.op(aten::mm, {at, g}), c.input(4)));
    }
  }});
  rules.push_back({"aten::mm", nullptr, [](RuleContext& c) {
    Value* g = c.grad(0);
    if (c.needsGrad(0)) c.setGrad(0, c.op(aten::mm, {g, c.op(aten::t, {c.save(c.input(1))})}));
    if (c.needsGrad(1)) c.setGrad(1, c.op(aten::mm, {c.op(aten::t, {c.save(c.input(0))}), g}));
  }});
  rules.push_back({"aten::bmm", nullptr, [](RuleContext& c) {
    Value* g = c.grad(0);
    if (c.needsGrad(0)) c.setGrad(0, c.op(aten::bmm, {g, c.op(aten::transpose, {c.save(c.input(1)), 1, 2})}));
    if (c.needsGrad(1)) c.setGrad(1, c.op(aten::bmm, {c.op(aten::transpose, {c.save(c.input(0)), 1, 2}), g}));
  }});
  rules.push_back({"aten::baddbmm", nullptr, [](RuleContext& c) {
    Value* g = c.grad(0);
    if (c.needsGrad(0))
      c.setGrad(0, c.op(aten::sum_to_size, {scaled(c, g, c.input(3)), c.saveSizes(c.input(0))}));
    if (c.needsGrad(1))
      c.setGrad(1, scaled(c, c.op(aten::bmm, {g, c.op(aten::transpose, {c.save(c.input(2)), 1, 2})}), c.input(4)));
    if (c.needsGrad(2))
      c.setGrad(2, scaled(c, c.op(aten::bmm, {c.op(aten::transpose, {c.save(c.input(1)), 1, 2}), g}), c.input(4)));
  }});
  rules.push_back({"aten::matmul", nullptr, [](RuleContext& c) {
    Value* g = c.grad(0);
    Value* a = c.save(c.input(0));
    Value* b = c.save(c.input(1));
    if (c.needsGrad(0)) c.setGrad(0, c.helper("matmul_grad_self", {g, a, b}));
    if (c.needsGrad(1)) c.setGrad(1, c.helper("matmul_grad_other", {g, a, b}));
  }});
}

}  // namespace rules
}  // namespace actnn
