// Reductions. mean and sum, over all or some dimensions: backward reshapes
// the gradient back to the reduced rank and expands it (dividing by the count
// for mean); only the input's sizes are saved. max / min along a dim scatter
// the gradient to the saved indices; over everything, spread it evenly over
// the elements equal to the result (a 1-bit mask). cumsum: the reversed
// cumulative sum. norm: x times grad / norm (p = 2), autograd's formula
// otherwise.
#include "rules.h"

#include <torch/csrc/jit/ir/constants.h>

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

// The p of a norm as a constant (None: 2).
double normOrder(Value* p, const char* op) {
  auto c = torch::jit::toIValue(p);
  TORCH_CHECK(c, op, ": the order p must be a constant");
  if (c->isNone()) return 2.0;
  TORCH_CHECK(c->isInt() || c->isDouble(), op, ": the order p must be a number");
  return c->toScalar().toDouble();
}

// norm(x, p, dims, keepdim) for any of the schemas; `dims` empty: over all.
void normBackward(RuleContext& c, Value* p_value, Value* dims, Value* keepdim, const char* op) {
  using namespace c10;
  const double p = normOrder(p_value, op);
  if (p == 2.0) {
    // x * (grad / norm): 1 / norm made in F (0 where the norm is 0), so the
    // product B forms is linear in each saved value.
    Value* result = c.output(0);
    Value* inverse = c.forwardOpAfter(aten::reciprocal, {result});
    Value* zero = c.forwardOpAfter(aten::eq, {result, 0});
    inverse = c.forwardOpAfter(aten::masked_fill, {inverse, zero, 0.0});
    c.setGrad(0, c.helper("l2_norm_backward", {c.grad(0), c.save(c.input(0)), c.save(inverse), dims, keepdim}));
    return;
  }
  c.setGrad(0, c.helper("norm_backward", {c.grad(0), c.save(c.input(0)), c.constant(p), c.save(c.output(0)), dims,
                                          keepdim}));
}

}  // namespace

void registerReductionRules(std::vector<RuleSpec>& rules) {
  using namespace c10;
  rules.push_back({"aten::mean", nullptr, reduce("mean_backward")});
  rules.push_back({"aten::sum", nullptr, reduce("sum_backward")});
  for (const char* op : {"aten::max.dim", "aten::min.dim"})
    rules.push_back({op, nullptr, [](RuleContext& c) {
      if (!c.grad(0)) return;  // only the indices were read: no gradient
      c.setGrad(0, c.helper("select_reduction_backward", {c.grad(0), c.save(c.input(1)), c.save(c.output(1)),
                                                          c.saveSizes(c.input(0)), c.save(c.input(2))}));
    }});
  for (const char* op : {"aten::max(Tensor self) -> Tensor", "aten::min(Tensor self) -> Tensor"})
    rules.push_back({op, nullptr, [](RuleContext& c) {
      Value* mask = c.save(c.forwardOpAfter(aten::eq, {c.input(0), c.output(0)}));
      c.setGrad(0, c.helper("evenly_distribute_backward", {c.grad(0), mask}));
    }});
  rules.push_back({"aten::cumsum", nullptr, [](RuleContext& c) {
    Value* g = c.helper("cumsum_backward", {c.grad(0), c.save(c.input(1))});
    if (c.input(2)->type()->kind() != TypeKind::NoneType)  // accumulated in another dtype: back to x's
      g = c.op(aten::to, {g, c.save(c.forwardOp(prim::dtype, {c.input(0)})), false, false});
    c.setGrad(0, g);
  }});
  rules.push_back({"aten::norm.ScalarOpt_dim", nullptr,
                   [](RuleContext& c) {
                     normBackward(c, c.input(1), c.save(c.input(2)), c.save(c.input(3)), "aten::norm");
                   },
                   needsConstant(1, "the order p")});
  rules.push_back({"aten::norm.Scalar", nullptr,
                   [](RuleContext& c) {
                     normBackward(c, c.input(1), c.constant(std::vector<int64_t>{}), c.constant(false), "aten::norm");
                   },
                   needsConstant(1, "the order p")});
  rules.push_back({"aten::linalg_vector_norm", nullptr,
                   [](RuleContext& c) {
                     Value* dims = c.input(2)->type()->kind() == TypeKind::NoneType
                                       ? c.constant(std::vector<int64_t>{})
                                       : c.save(c.input(2));
                     normBackward(c, c.input(1), dims, c.save(c.input(3)), "aten::linalg_vector_norm");
                   },
                   [](const Node* n) -> std::string {
                     if (n->input(4)->type()->kind() != TypeKind::NoneType) return "a dtype is given";
                     return needsConstant(1, "the order")(n);
                   }});
}

}  // namespace rules
}  // namespace actnn
