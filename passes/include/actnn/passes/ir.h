// TrainingIR: what the passes read and rewrite. It starts as a module's forward
// graph (or a .tsir graph), becomes one lowered graph whose inputs are the user
// inputs followed by the lifted parameters and buffers, and after `autodiff`
// also holds the forward graph F and the backward graph B joined by the saved
// set.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <c10/util/Optional.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

namespace actnn {

enum class InputRole { Input, Parameter, Buffer };
const char* roleName(InputRole role);

struct InputInfo {
  std::string name;  // user input: its name in forward(); else the state_dict key
  InputRole role = InputRole::Input;
  bool requires_grad = false;  // parameters: as in the module; inputs: float tensors
  int64_t rank = -1;           // parameters and buffers: their dim(); -1 when unknown
};

// A forward node whose derivative reads a saved value, and the B value of
// the gradient flowing into that node's first output (null when none does):
// the gradient that weighs the value's quantization noise.
struct SavedUse {
  torch::jit::Node* consumer = nullptr;  // in `forward`
  torch::jit::Value* grad = nullptr;     // in `backward`
};

// What a saved value is, for compression (the saved-set pass decides).
enum class SavedKind {
  Held,        // a graph input or a view of one: the caller holds it anyway
  Meta,        // not a tensor (sizes, dtype, scalars)
  Statistic,   // small per-channel tensors (batch-norm mean / invstd, ...)
  Mask,        // a boolean tensor: 1 bit per value
  PoolIndex,   // max-pooling argmax offsets: a few bits per value
  Activation,  // a floating-point activation: quantizable
  Other,       // a tensor of unknown or integer type: kept as it is
  Fallback,    // an op's autograd graph (the autograd fallback): what it saves, kept as autograd keeps it
  Branch,      // made inside a data-dependent branch (None when the other one ran): kept as it is
};
const char* savedKindName(SavedKind kind);

struct SavedValue {
  SavedKind kind = SavedKind::Other;
  std::string name;  // "<producer op> %<value> -> <consumer ops>", for reports
};

// Set by insert-compression: what the runtime's CompressionState is built
// from (one site per quantized activation, in site order).
struct CompressionConfig {
  double budget_bits = 2;
  int64_t group_size = 256;
  struct Site {
    std::string name;
    int64_t bits = 0;   // fixed width, 0: mixed
    int64_t floor = 1;  // mixed: narrowest width
    bool dither = false;  // decoded with subtractive dither (set by debias-backward)
    bool batch_norm = false;  // read by a batch norm (small counts raise the floor at run time)
    int64_t normalized = 0;  // read only as normalizations' input: -1 batch norm, k > 0 layer norm over k dims
    bool triangular = false;  // a softmax output: packed as its lower triangle when the rest is zero (causal)
  };
  std::vector<Site> sites;
};

// Set by plan-memory: the packed buffers of one step, which the runtime's
// Arena places in one buffer. Times count F's top-level nodes, then B's.
struct ArenaConfig {
  int64_t alignment = 64;
  struct Slot {
    std::string name;
    int64_t first = 0, last = 0;  // lifetime, inclusive
    int64_t source = -1;          // a swap_in's slot: the F slot whose bytes come back
  };
  std::vector<Slot> slots;
};

// A forward input the program was specialized to (specialize-shapes): the
// compiled module raises when a call brings other sizes or another dtype.
struct SpecializedInput {
  std::string name;
  std::vector<int64_t> sizes;
  c10::ScalarType dtype = c10::ScalarType::Float;
};

struct TrainingIR {
  // The program. Before lower-module (module input) its first input is `self`.
  std::shared_ptr<torch::jit::Graph> graph;
  // The source module and the method of it that is the program (forward;
  // _actnn_eval_forward when a compiled module is specialized again at run
  // time); no module for graph text.
  c10::optional<torch::jit::Module> module;
  std::string method = "forward";
  // The passes that built this IR, as a pipeline string without
  // specialize-shapes (recorded by runPipeline): what a compiled module runs
  // again to specialize itself to a new input signature.
  std::string pipeline;
  bool lowered = false;
  // One per input of `graph` once lowered.
  std::vector<InputInfo> inputs;
  // Set by specialize-shapes, in the order its option named them.
  std::vector<SpecializedInput> specialized;
  // The `training` flag of every submodule ("" is the root) when compiled; the
  // runtime refuses to run a program whose module flags have changed.
  std::vector<std::pair<std::string, bool>> training_flags;

  // Set by autodiff. F(inputs...) -> (outputs..., saved...);
  // B(grad of each output..., saved...) -> (grad of inputs[grad_inputs[i]]...).
  std::shared_ptr<torch::jit::Graph> forward, backward;
  size_t num_outputs = 0;
  std::vector<size_t> grad_inputs;
  // Rebuilds the program's result (tuple/list/dict) from F's flat outputs.
  std::shared_ptr<torch::jit::Graph> output_builder;
  // How autodiff differentiated F's nodes: how many by a derivative rule,
  // and which under the autograd fallback ("aten::einsum at file:line:col").
  size_t rule_ops = 0;
  std::vector<std::string> fallback_ops;
  // The data-dependent prim::If nodes differentiated per branch (F records
  // the condition, B runs the taken branch's backward): "prim::If at file:line:col".
  std::vector<std::string> branch_ops;

  // Per saved value (F's outputs after the first num_outputs, in order): the
  // rules that read it. Set by autodiff; passes that rewrite F and B in place
  // keep it valid, and any pass that rebuilds them must rebuild it.
  std::vector<std::vector<SavedUse>> saved_uses;

  // Per saved value, from saved-set.
  std::vector<SavedValue> saved;
  // Set when F and B take the compression state as their last input.
  c10::optional<CompressionConfig> compression;
  // Set when F and B also take the arena, after the state.
  c10::optional<ArenaConfig> arena;

  size_t numSaved() const { return forward ? forward->outputs().size() - num_outputs : 0; }

  static TrainingIR fromModule(const torch::jit::Module& module, const std::string& method = "forward");
  // Graph text: every input is a user input; float tensors require grad.
  static TrainingIR fromGraph(std::shared_ptr<torch::jit::Graph> graph);
};

}  // namespace actnn
