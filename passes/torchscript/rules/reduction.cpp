// mean and sum, over all or some dimensions: backward reshapes the gradient
// back to the reduced rank and expands it (dividing by the count for mean).
// Only the input's sizes are saved.
#include "rules.h"

namespace actnn {
namespace rules {
namespace {

BackwardFn reduce(const char* helper) {
  return [=](RuleContext& c) {
    Node* n = c.node();
    Value* sizes = c.saveSizes(c.input(0));
    // (self, dtype) reduces everything; (self, dim, keepdim, dtype) some dims.
    bool all = n->inputs().size() <= 2;
    Value* dims = all ? c.constant(std::vector<int64_t>{}) : c.save(c.input(1));
    if (!all && dims->type()->kind() == c10::TypeKind::NoneType) dims = c.constant(std::vector<int64_t>{});
    Value* keepdim = all ? c.constant(false) : c.save(c.input(2));
    c.setGrad(0, c.helper(helper, {c.grad(0), sizes, dims, keepdim}));
  };
}

}  // namespace

void registerReductionRules(std::vector<RuleSpec>& rules) {
  rules.push_back({"aten::mean", nullptr, reduce("mean_backward")});
  rules.push_back({"aten::sum", nullptr, reduce("sum_backward")});
}

}  // namespace rules
}  // namespace actnn
