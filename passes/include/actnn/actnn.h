// actnn's C++ API: compile a TorchScript module into one that trains through
// an explicit forward/backward graph pair (and, at L1+, stores its saved
// activations compressed).
//
//   torch::jit::Module m = torch::jit::load("resnet50.pt");
//   actnn::Options options;  // level L3 unless told otherwise
//   torch::jit::Module c = actnn::compile(m, options);
//   auto loss = criterion(c.forward({x}).toTensor(), y);
//   loss.backward();              // gradients land in m's parameters
//   c.save("resnet50.actnn.pt");  // an ordinary TorchScript archive
//
// The compiled module shares the original's parameters and buffers (the
// same tensors, under the same names: its state_dict loads into the original
// and back, and an optimizer built on either keeps working). In eval mode it
// runs the original forward unchanged.
#pragma once

#include <string>

#include <torch/csrc/jit/api/module.h>

#include "actnn/passes/ir.h"
#include "actnn/passes/pass.h"

namespace actnn {

struct Options {
  std::string level = "L3";  // L0..L5 (the tool's default too)
  std::string passes;        // an explicit pipeline; overrides `level`
  // Forward inputs' sizes, by name: the level's pipeline specializes the
  // program to them (specialize-shapes), so control flow that depends only on
  // sizes, ranks and dtypes folds; the compiled module then raises when called
  // with other sizes. Ignored with an explicit `passes`.
  std::vector<std::pair<std::string, std::vector<int64_t>>> input_shapes;
  // A node with no derivative rule runs under LibTorch autograd (its saved
  // tensors kept as autograd keeps them); false: it is an error, naming the
  // op and its source line. Ignored with an explicit `passes`.
  bool fallback = true;
};

// Runs the pipeline; throws CompileError (a std::runtime_error) naming the
// op, node and source location of what could not be compiled.
torch::jit::Module compile(const torch::jit::Module& module, const Options& options = {});

// The pieces compile() is made of, for tools and tests.
std::string pipelineFor(const Options& options);
void runPipelineText(const std::string& pipeline, TrainingIR& ir);
torch::jit::Module buildTrainingModule(const TrainingIR& ir);
// The runtime state F and B take when the saved set is compressed (a fresh
// one: budgets at the global average, no statistics yet).
c10::IValue makeCompressionState(const CompressionConfig& config);

}  // namespace actnn
