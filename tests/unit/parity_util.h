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
//
// `floor` > 0 measures each gradient's (buffer's) error against at least
// `floor` times the largest parameter gradient (buffer value) of the step
// instead of against its own magnitude alone: for graphs that compute the
// same function with different ops (ONNX imports), where a value that is zero
// in exact arithmetic (the gradient of a bias followed by batch norm, the
// batch mean after a normalized input) is rounding noise on both sides.
ParityReport compareTrainingStep(torch::jit::Module& reference, torch::jit::Module& compiled,
                                 const std::vector<at::Tensor>& inputs, uint64_t seed, double floor = 0);

// The tensors of a forward result (tuples, lists and dicts flattened in order).
void flattenTensors(const c10::IValue& v, std::vector<at::Tensor>& out);

// max |actual - expected| / max(max |expected|, min_scale)
double relativeError(const at::Tensor& actual, const at::Tensor& expected, double min_scale = 0);

}  // namespace testing
}  // namespace actnn
