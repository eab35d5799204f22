// nll_loss (what cross_entropy_loss canonicalizes to, after log_softmax) and
// mse_loss. nll_loss is lowered to nll_loss_forward, whose total weight
// backward needs. nll_loss_forward takes 1-d and 2-d inputs only, so
// nll_loss_nd, which takes (N, C, d1, ..., dk) too, first moves the classes
// last and flattens, as ATen's nll_loss2d computes it:
//
//   %l = aten::nll_loss_nd(%x, %t, %w, %reduction, %ignore)
// becomes
//   %x2 = aten::reshape(aten::permute(%x, <perm>), <(rows, C)>)
//   %l2, %total_weight = aten::nll_loss_forward(%x2, aten::reshape(%t, [-1]), %w, %reduction, %ignore)
//   %l = aten::reshape(%l2, <size of %t, or [] when reduced>)
#include "actnn/passes/ir_builder.h"
#include "rules.h"

namespace actnn {
namespace rules {
namespace {

Node* lowerNd(Node* n, Graph& f) {
  using namespace c10;
  Value *x2, *t2, *shape = nullptr;
  Node* forward;
  {
    // Scoped: the guard must not outlive n, which replaceNode destroys.
    torch::jit::WithInsertPoint guard(n);
    Value* sizes = insertValue(f, aten::size, {n->input(0)});
    auto helper = [&](const char* name, std::vector<Value*> args) {
      return torch::jit::insertGraph(f, *helperGraph(name), args).at(0);
    };
    Value* permuted = insertValue(f, aten::permute, {n->input(0), helper("nll_loss_nd_perm", {sizes})});
    x2 = insertValue(f, aten::reshape, {permuted, helper("nll_loss_nd_rows", {sizes})});
    t2 = insertValue(f, aten::reshape, {n->input(1), std::vector<int64_t>{-1}});
    auto reduction = constantInt(n->input(3));
    if (!reduction)
      shape = helper("nll_loss_nd_result", {insertValue(f, aten::size, {n->input(1)}), n->input(3)});
    else if (*reduction == 0)
      shape = insertValue(f, aten::size, {n->input(1)});
    forward = insertOp(f, aten::nll_loss_forward, {x2, t2, n->input(2), n->input(3), n->input(4)},
                       n->sourceRange());
  }
  if (!shape) {  // a reduced loss is a scalar already
    forward->output(0)->setType(n->output()->type());
    n->output()->replaceAllUsesWith(forward->output(0));
    n->destroy();
    return forward;
  }
  return replaceNode(n, f, aten::reshape, {forward->output(0), shape});
}

}  // namespace

void registerLossRules(std::vector<RuleSpec>& rules) {
  using namespace c10;
  rules.push_back({"aten::nll_loss_nd", lowerNd, nullptr});
  rules.push_back({"aten::nll_loss", [](Node* n, Graph& f) {
    return replaceNode(n, f, aten::nll_loss_forward,
                       {n->input(0), n->input(1), n->input(2), n->input(3), n->input(4)});
  }, nullptr});
  // nll_loss_forward(self, target, weight, reduction, ignore_index) -> (output, total_weight)
  // nll_loss_backward reads only the shape and options of self, so a
  // stand-in takes its place and no activation is saved (the log-probabilities
  // are saved by log_softmax; the (rows, C) view of them would be a second copy).
  rules.push_back({"aten::nll_loss_forward", nullptr, [](RuleContext& c) {
    Value* like = c.saveShapeOnly(c.input(0));
    Value* weight = c.input(2)->type()->kind() == TypeKind::NoneType ? c.none() : c.save(c.input(2));
    c.setGrad(0, c.op(aten::nll_loss_backward,
                      {c.grad(0), like, c.save(c.input(1)), weight, c.save(c.input(3)), c.save(c.input(4)),
                       c.save(c.output(1))}));
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
