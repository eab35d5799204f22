// Small helpers for building IR in passes: insert an ATen op by name with the
// schema matched from its arguments (constants are inserted for plain values).
#pragma once

#include <string>
#include <vector>

#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/ir/named_value.h>

namespace actnn {

// Inserts `kind(args...)` at the graph's insert point and returns the node
// (for ops with several outputs, the node itself, not a packing tuple). The
// node takes `range` as its source range; `kwargs` are keyword arguments.
// Throws when no schema matches.
torch::jit::Node* insertOp(torch::jit::Graph& graph, c10::Symbol kind,
                           const std::vector<torch::jit::NamedValue>& args,
                           const c10::optional<torch::jit::SourceRange>& range = c10::nullopt,
                           const std::vector<torch::jit::NamedValue>& kwargs = {});

// Same, for a single-output op.
torch::jit::Value* insertValue(torch::jit::Graph& graph, c10::Symbol kind,
                               const std::vector<torch::jit::NamedValue>& args,
                               const c10::optional<torch::jit::SourceRange>& range = c10::nullopt,
                           const std::vector<torch::jit::NamedValue>& kwargs = {});

// Replaces `node` by `kind(args)` inserted right before it (plain values in
// args become constants there), with node's source range: the new node takes
// over node's outputs (the first node->outputs().size() of its own, with
// node's types), and node is destroyed. Returns the new node.
torch::jit::Node* replaceNode(torch::jit::Node* node, torch::jit::Graph& graph, c10::Symbol kind,
                              const std::vector<torch::jit::NamedValue>& args);

// Whether `v` is a constant, and its value.
c10::optional<c10::IValue> constantOf(const torch::jit::Value* v);
// Whether `v` is a constant int, and its value.
c10::optional<int64_t> constantInt(const torch::jit::Value* v);

// Whether n's first output may share storage with its first input (a view:
// view, reshape, select, detach, ...), from its schema's alias annotations.
bool returnsAlias(const torch::jit::Node* n);
// The user of `use` writes that operand in place (its schema marks the
// argument as written); false where the user has no schema (prim:: nodes
// such as list unpacking, which only read).
bool writesOperand(const torch::jit::Use& use);

// Ops whose results' sizes depend on their operands' values (nonzero,
// unique, masked_select, ...): not to be run on stand-in tensors of the
// right sizes when computing shapes.
bool sizesReadValues(const torch::jit::Node* n);

// Shape computation on stand-ins. standIn: every tensor in v (also inside
// lists and tuples) as a meta tensor of its sizes and dtype (to_meta), or a
// meta tensor as zeros on the CPU (!to_meta; other tensors stay).
c10::IValue standIn(const c10::IValue& v, bool to_meta);
// Runs n on stand-ins of `inputs`: meta tensors first; an op without a meta
// kernel (LibTorch's C++ has none for convolution) on CPU zeros of the same
// sizes, unless its results' sizes depend on values (sizesReadValues) or it
// returns anything but tensors (that would be read from the zeros).
// `results` gets n's outputs, tensors as meta tensors; false when neither
// ran (an op that reads values, or has no kernel for these inputs).
bool runOnStandIns(torch::jit::Node* n, const std::vector<c10::IValue>& inputs, torch::jit::Stack& results);

// Whether a value of type t holds tensors: a tensor, or a list, tuple,
// dict or optional with tensors somewhere inside.
bool carriesTensors(const c10::TypePtr& t);

// The values sharing v's storage through views: walks up to the base (the
// first value not made by a view op), then collects every view of it,
// transitively. Includes v and the base.
std::vector<torch::jit::Value*> viewFamily(torch::jit::Value* v);

// A Python identifier for a value name ("layer1.0.conv1.weight" ->
// "layer1_0_conv1_weight"): methods are saved as TorchScript source.
std::string identifier(const std::string& name);
// The symbol of actnn::<name>, the runtime's ops.
c10::Symbol actnnOp(const char* name);
// The TorchScript type of the runtime's class torch.classes.actnn.<name>.
c10::TypePtr actnnClass(const char* name);
// A copy of function `name`'s graph (calls inlined) from the TorchScript
// `source`, compiled once per source: helpers a pass inserts with
// torch::jit::insertGraph. `source` must outlive the process (a literal).
std::shared_ptr<torch::jit::Graph> scriptHelperGraph(const char* source, const std::string& name);
// The node of `top` that holds n (n itself, or the node owning its block).
torch::jit::Node* topLevelNode(torch::jit::Node* n, torch::jit::Block* top);
// Calls f on every node of the block and its nested blocks, in order; f may
// destroy the node it is given.
void forEachNode(torch::jit::Block* block, const std::function<void(torch::jit::Node*)>& f);

}  // namespace actnn
