// Gradient parity between a compiled module and LibTorch autograd on the
// original: both run the same inputs from the same generator state, and every
// gradient, the loss and the buffers are compared by relative error
// (max |a - b| / max |b|, per tensor).
#pragma once

#include <torch/csrc/jit/api/module.h>

#include <string>
#include <vector>

namespace actnn {
namespace testing {

struct ParityReport {
  double worst = 0;       // the largest relative error seen
  std::string worst_name;  // where
  std::vector<std::string> problems;  // missing gradients, shape mismatches
};

// Runs one training step (forward, loss = sum(out * probe), backward) on
// `reference` under autograd and on `compiled`, from the same seed, and
// compares loss, parameter gradients, the input gradient and the buffers.
// The two modules must hold separate copies of the same weights.
ParityReport compareTrainingStep(torch::jit::Module& reference, torch::jit::Module& compiled,
                                 const std::vector<at::Tensor>& inputs, uint64_t seed);

double relativeError(const at::Tensor& actual, const at::Tensor& expected);

}  // namespace testing
}  // namespace actnn
