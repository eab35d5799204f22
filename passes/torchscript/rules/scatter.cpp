// Gathers and scatters along a dimension, and embedding look-ups: each
// gradient moves back along the saved index tensor (gather <-> scatter_add),
// with zeros where a scatter overwrote its input. Only the index tensors and
// sizes are saved, never the gathered values.
#include "rules.h"

#include <torch/csrc/jit/ir/constants.h>

namespace actnn {
namespace rules {

void registerScatterRules(std::vector<RuleSpec>& rules) {
  using namespace c10;
  // gather(self, dim, index): the gradient adds back into zeros of self's
  // sizes at the gathered places (repeated indices sum).
  rules.push_back({"aten::gather", nullptr, [](RuleContext& c) {
    Value* zeros = c.op(aten::new_zeros, {c.grad(0), c.saveSizes(c.input(0))});
    c.setGrad(0, c.op(aten::scatter_add, {zeros, c.save(c.input(1)), c.save(c.input(2)), c.grad(0)}));
  }});
  // scatter_add(self, dim, index, src): self passes the gradient through;
  // src reads it at the scattered places.
  rules.push_back({"aten::scatter_add", nullptr, [](RuleContext& c) {
    if (c.needsGrad(0)) c.setGrad(0, c.grad(0));
    if (c.needsGrad(3)) c.setGrad(3, c.op(aten::gather, {c.grad(0), c.save(c.input(1)), c.save(c.input(2))}));
  }});
  // scatter(self, dim, index, src | value): the overwritten places of self
  // get no gradient; src gets the gradient there.
  auto scatter = [](RuleContext& c) {
    Value* dim = c.save(c.input(1));
    Value* index = c.save(c.input(2));
    if (c.needsGrad(0)) c.setGrad(0, c.op(aten::scatter, {c.grad(0), dim, index, c.constant(0.0)}));
    if (c.node()->input(3)->type()->isSubtypeOf(*TensorType::get()) && c.needsGrad(3))
      c.setGrad(3, c.op(aten::gather, {c.grad(0), dim, index}));
  };
  rules.push_back({"aten::scatter.src", nullptr, scatter});
  rules.push_back({"aten::scatter.value", nullptr, scatter});
  // embedding(weight, indices, padding_idx, scale_grad_by_freq, sparse): the
  // dense weight gradient ATen computes (the padding row gets none). A
  // sparse gradient is not made by the rule (the fallback makes it).
  rules.push_back({"aten::embedding", nullptr,
                   [](RuleContext& c) {
                     Value* rows = c.save(c.forwardOp(aten::size, {c.input(0), 0}));
                     c.setGrad(0, c.op(aten::embedding_dense_backward, {c.grad(0), c.save(c.input(1)), rows,
                                                                        c.save(c.input(2)), c.save(c.input(3))}));
                   },
                   [](const Node* n) -> std::string {
                     auto sparse = torch::jit::toIValue(n->input(4));
                     return sparse && sparse->isBool() && !sparse->toBool() ? "" : "sparse is not False";
                   }});
}

}  // namespace rules
}  // namespace actnn
