// Runtime specialization of a backward graph B to the gradients an autograd
// call needs: outputs nobody asked for become None, dead code goes, and the
// output masks of ATen *_backward ops stop computing unused gradients (so a
// first convolution does not compute the gradient of an input that does not
// require grad, as autograd would not either).
#pragma once

#include <memory>
#include <vector>

#include <torch/csrc/jit/ir/ir.h>

namespace actnn {

// `needed[i]` says whether output i of the tuple B returns is needed.
std::shared_ptr<torch::jit::Graph> specializeBackward(const std::shared_ptr<torch::jit::Graph>& backward,
                                                      const std::vector<bool>& needed);

}  // namespace actnn
