// What the training runtime (runtime/training.cpp, the actnn::run_training
// op) shares with the compiler and tools: reaching a module's tensors by
// state_dict key, the program run_training runs, and the hook through which
// the compiler specializes a compiled module to a new input signature.
#pragma once

#include <ATen/core/ivalue.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace torch::jit {
struct Graph;
}

namespace actnn {

// The attribute at a dotted path ("layer1.0.conv1.weight") of a module
// object; throws naming the path when it does not exist.
c10::IValue attributePath(const c10::intrusive_ptr<c10::ivalue::Object>& root, const std::string& path);

// One training program: F and B as method graphs of the compiled module's
// class (`self` first, one tuple out) and what run_training needs to call
// them. A compiled module carries one as attributes (passes/compile.cpp);
// the compiler builds more at run time, one per input signature.
struct ProgramSpec {
  std::shared_ptr<torch::jit::Graph> forward, backward;
  std::vector<std::string> lifted;  // attribute paths of the tensors after the user inputs
  std::vector<bool> lifted_requires_grad;
  std::vector<int64_t> grad_inputs;  // B's outputs: gradients of these F inputs
  std::vector<std::pair<std::string, bool>> training_flags;
  int64_t num_outputs = 0;
  int64_t fallback_ops = 0;  // nodes F runs under the autograd fallback
  int64_t branch_ops = 0;    // data-dependent prim::If nodes F and B branch on
  // A specialization's own CompressionState and Arena (None when F and B do
  // not take them); the module's program reads its attributes instead.
  c10::IValue state, arena;
};

// Compiles the module `self` (a compiled module) again for the sizes and
// dtypes of `inputs`; throws naming what could not be compiled. The compiler
// installs one (passes/compile.cpp) in every process it is linked into.
using Specializer =
    std::function<ProgramSpec(const c10::intrusive_ptr<c10::ivalue::Object>& self, const std::vector<at::Tensor>& inputs)>;
// Installs `specializer` (an empty one uninstalls) and returns the one it
// replaces.
Specializer setSpecializer(Specializer specializer);

// "x:2x3x8x8:float32;y:2:int64": the sizes and dtypes of a call's inputs, in
// the syntax of specialize-shapes' `shapes` option, and the dtype names it
// uses (float32, float64, float16, bfloat16, int64, int32, int16, int8,
// uint8, bool).
std::string signatureText(const std::vector<std::string>& names, const std::vector<at::Tensor>& inputs);
// One input's entry of it: "x:2x3x8x8:float32" ("x:2x3x8x8" without a dtype).
std::string shapeEntry(const std::string& name, c10::IntArrayRef sizes, c10::optional<c10::ScalarType> dtype);
std::string dtypeName(c10::ScalarType dtype);
c10::optional<c10::ScalarType> dtypeNamed(const std::string& name);

// The specializations a compiled module (its class) has built in this
// process, in the order built.
struct Specialization {
  std::string signature;
  int64_t fallback_ops = 0, branch_ops = 0;
  bool operator==(const Specialization& o) const {
    return signature == o.signature && fallback_ops == o.fallback_ops && branch_ops == o.branch_ops;
  }
};
std::vector<Specialization> specializations(const c10::intrusive_ptr<c10::ivalue::Object>& self);

}  // namespace actnn
