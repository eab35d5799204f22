// Max and average pooling, plain and adaptive. Max pooling is lowered to its
// *_with_indices form (what autograd runs), so the argmax indices are a
// forward value and backward does not recompute them. Every pooling backward
// reads only the shape of its input, so the input is not saved (autograd
// saves it): a storage-less stand-in of its shape takes its place in B.
#include "rules.h"

namespace actnn {
namespace rules {
namespace {

LowerFn withIndices(c10::Symbol kind) {
  return [=](Node* n, Graph& f) {
    std::vector<NamedValue> args(n->inputs().begin(), n->inputs().end());
    return replaceNode(n, f, kind, args);
  };
}

// backward(grad, self, args[1..], [indices])
BackwardFn poolBackward(c10::Symbol backward, bool indices) {
  return [=](RuleContext& c) {
    std::vector<NamedValue> args{c.grad(0), c.saveShapeOnly(c.input(0))};
    for (size_t i = 1; i < c.node()->inputs().size(); ++i) args.emplace_back(c.save(c.input(i)));
    if (indices) args.emplace_back(c.save(c.output(1)));
    c.setGrad(0, c.op(backward, args));
  };
}

}  // namespace

void registerPoolingRules(std::vector<RuleSpec>& rules) {
  using namespace c10;
  rules.push_back({"aten::max_pool2d", withIndices(aten::max_pool2d_with_indices), nullptr});
  rules.push_back({"aten::max_pool3d", withIndices(aten::max_pool3d_with_indices), nullptr});
  rules.push_back({"aten::max_pool2d_with_indices", nullptr,
                   poolBackward(aten::max_pool2d_with_indices_backward, true)});
  rules.push_back({"aten::max_pool3d_with_indices", nullptr,
                   poolBackward(aten::max_pool3d_with_indices_backward, true)});
  rules.push_back({"aten::avg_pool2d", nullptr, poolBackward(aten::avg_pool2d_backward, false)});
  rules.push_back({"aten::avg_pool3d", nullptr, poolBackward(aten::avg_pool3d_backward, false)});
  rules.push_back({"aten::adaptive_avg_pool2d", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::_adaptive_avg_pool2d_backward, {c.grad(0), c.saveShapeOnly(c.input(0))}));
  }});
  rules.push_back({"aten::adaptive_avg_pool3d", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::_adaptive_avg_pool3d_backward, {c.grad(0), c.saveShapeOnly(c.input(0))}));
  }});
  rules.push_back({"aten::adaptive_max_pool2d", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::adaptive_max_pool2d_backward,
                      {c.grad(0), c.saveShapeOnly(c.input(0)), c.save(c.output(1))}));
  }});
  rules.push_back({"aten::adaptive_max_pool3d", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::adaptive_max_pool3d_backward,
                      {c.grad(0), c.saveShapeOnly(c.input(0)), c.save(c.output(1))}));
  }});
}

}  // namespace rules
}  // namespace actnn
