// The autograd fallback: an op (or a control-flow node) with no derivative
// rule runs inside F under LibTorch autograd, and B asks autograd for its
// gradients. autodiff wraps such a node n:
//
//   %prev = actnn::fallback_begin()                   # grad mode on
//   %l = actnn::fallback_leaf(%x)                     # x, cut from any graph
//   %y = n(%l, ...)                                   # recorded by autograd
//   %tape = actnn::fallback_end(%prev, "n", [[%l]], [[%y]])   # grad mode back
//   %y_d = actnn::fallback_output(%tape, %y)          # what the rest of F reads
//   ...
//   B: %g = actnn::fallback_backward(%tape, [[%grad_y_d]])    # [[grad x]]
//
// A leaf is not a leaf of autograd: its gradient edge points at a sink node
// that holds no tensor, and B captures the gradient arriving there (the
// engine's `outputs`), so the tape keeps only what the op's own backward
// saves. Inputs and outputs come in groups (a Tensor is a group of one, a
// Tensor[] a group of its elements). The tape is used once; B frees it.
// What a tape keeps alive is what releasing it frees (actnn-opt --report
// measures it so). Because B consumes the tape, a module that uses the
// fallback runs backward once per forward (no retain_graph=True, also at
// L0). fallback_begin turns grad mode on and fallback_end restores it: a
// caller that runs F directly (not through actnn::run_training, whose
// autograd function guards grad mode) should hold an at::AutoGradMode or
// at::NoGradGuard around the run so that an exception in between does not
// leave grad mode on.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/edge.h>
#include <torch/custom_class.h>

#include <string>
#include <vector>

namespace actnn {

struct FallbackTape : torch::CustomClassHolder {
  std::string op;  // what ran under autograd, for reports
  // Per input group, per element: the sink edge and the leaf's sizes and
  // options (for a zero gradient where autograd finds none).
  struct Input {
    torch::autograd::Edge edge;
    std::vector<int64_t> sizes;
    at::TensorOptions options;
  };
  std::vector<std::vector<Input>> inputs;
  // Per output group, per element: the output's gradient edge (no function
  // where the output does not depend on an input that requires grad).
  std::vector<std::vector<torch::autograd::Edge>> outputs;
  bool used = false;
};
using FallbackTapePtr = c10::intrusive_ptr<FallbackTape>;

}  // namespace actnn
