// Convolution (1-3d, transposed, grouped, dilated), in canonical form
// aten::convolution: backward is aten::convolution_backward, the op autograd
// itself uses, with an output mask of the inputs that need gradients.
#include "rules.h"

namespace actnn {
namespace rules {

void registerConvolutionRules(std::vector<RuleSpec>& rules) {
  rules.push_back({"aten::convolution", nullptr, [](RuleContext& c) {
    Value* bias = c.input(2);
    Value* bias_sizes = bias->type()->kind() == c10::TypeKind::NoneType ? c.none() : c.saveSizes(bias);
    auto n = c.opNode(c10::aten::convolution_backward,
                      {c.grad(0), c.save(c.input(0)), c.save(c.input(1)), bias_sizes, c.save(c.input(3)),
                       c.save(c.input(4)), c.save(c.input(5)), c.save(c.input(6)), c.save(c.input(7)),
                       c.save(c.input(8)),
                       c.constant(std::vector<bool>{c.needsGrad(0), c.needsGrad(1), c.needsGrad(2)})});
    for (size_t i = 0; i < 3; ++i) c.setGrad(i, n->output(i));
  }});
}

}  // namespace rules
}  // namespace actnn
