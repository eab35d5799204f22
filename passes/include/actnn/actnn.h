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

#include <map>
#include <string>

#include <torch/csrc/jit/api/module.h>

#include "actnn/passes/ir.h"
#include "actnn/passes/pass.h"
#include "actnn/runtime/training.h"

namespace actnn {

struct Options {
  std::string level = "L3";  // L0..L5 (the tool's default too)
  std::string passes;        // an explicit pipeline; overrides `level`
  // Forward inputs' sizes, by name: the level's pipeline specializes the
  // program to them (specialize-shapes), so control flow that depends only on
  // sizes, ranks and dtypes folds. A call with other sizes compiles its own
  // specialization where the compiler is linked (see load()), and raises
  // where only the runtime is. Ignored with an explicit `passes`.
  std::vector<std::pair<std::string, std::vector<int64_t>>> input_shapes;
  // The dtype of an input in input_shapes, where not float32 (token ids).
  std::map<std::string, c10::ScalarType> input_dtypes;
  // A node with no derivative rule runs under LibTorch autograd (its saved
  // tensors kept as autograd keeps them); false: it is an error, naming the
  // op and its source line. Ignored with an explicit `passes`.
  bool fallback = true;
};

// Runs the pipeline; throws CompileError (a std::runtime_error) naming the
// op, node and source location of what could not be compiled.
//
// A module whose control flow depends on its inputs' sizes (Swin's padding
// to the window size) compiles without input_shapes too: those branches run
// under the autograd fallback, which is correct for any size. In every
// process the compiler is linked into, the compiled module (also one loaded
// from an archive) then specializes itself to each input signature it is
// called with: the first call with new sizes and dtypes compiles the same
// pipeline for them (specialize-shapes), later calls with them reuse it.
torch::jit::Module compile(const torch::jit::Module& module, const Options& options = {});

// torch::jit::load, and the guarantee that this process can specialize what
// it loads (a program that links the compiler but never calls compile()
// would otherwise not link the code that does). The archive's tensor records
// are checked against its pickles first (actnn/runtime/archive_check.h:
// std::runtime_error "the archive is malformed: ..."); a crash inside
// LibTorch's own loader is not contained here (actnn-opt loads in a child
// process first; see the README's "Untrusted archives").
torch::jit::Module load(const std::string& path);

// The pieces compile() is made of, for tools and tests.
std::string pipelineFor(const Options& options);
void runPipelineText(const std::string& pipeline, TrainingIR& ir);
torch::jit::Module buildTrainingModule(const TrainingIR& ir);
// F, B and what runs them, as the runtime takes them; `self_type` is the
// class F and B are methods of.
ProgramSpec trainingProgram(const TrainingIR& ir, const c10::ClassTypePtr& self_type);
// The runtime state F and B take when the saved set is compressed (a fresh
// one: budgets at the global average, no statistics yet).
c10::IValue makeCompressionState(const CompressionConfig& config);

}  // namespace actnn
