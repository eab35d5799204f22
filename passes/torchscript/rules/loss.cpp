// nll_loss (what cross_entropy_loss canonicalizes to, after log_softmax) and
// mse_loss. nll_loss is lowered to nll_loss_forward, whose total weight
// backward needs.
#include "rules.h"

namespace actnn {
namespace rules {

void registerLossRules(std::vector<RuleSpec>& rules) {
  using namespace c10;
  auto toForward = [](Node* n, Graph& f) {
    return replaceNode(n, f, aten::nll_loss_forward,
                       {n->input(0), n->input(1), n->input(2), n->input(3), n->input(4)});
  };
  rules.push_back({"aten::nll_loss_nd", toForward, nullptr});
  rules.push_back({"aten::nll_loss", toForward, nullptr});
  // nll_loss_forward(self, target, weight, reduction, ignore_index) -> (output, total_weight)
  rules.push_back({"aten::nll_loss_forward", nullptr, [](RuleContext& c) {
    Value* weight = c.input(2)->type()->kind() == TypeKind::NoneType ? c.none() : c.save(c.input(2));
    c.setGrad(0, c.op(aten::nll_loss_backward,
                      {c.grad(0), c.save(c.input(0)), c.save(c.input(1)), weight, c.save(c.input(3)),
                       c.save(c.input(4)), c.save(c.output(1))}));
  }});
  rules.push_back({"aten::mse_loss", nullptr, [](RuleContext& c) {
    Value* g = c.op(aten::mse_loss_backward,
                    {c.grad(0), c.save(c.input(0)), c.save(c.input(1)), c.save(c.input(2))});
    c.setGrad(0, g);
    if (c.needsGrad(1)) c.setGrad(1, c.op(aten::neg, {g}));
  }});
}

}  // namespace rules
}  // namespace actnn
