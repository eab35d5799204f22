// Derivative rules. One file per op family registers RuleSpecs; autodiff
// looks a node up by schema. A rule may rewrite the forward node first
// (`lower`: batch_norm -> native_batch_norm, so the saved statistics become
// values), then emits the backward of the lowered node into B through a
// RuleContext, which makes every forward value B needs an explicit saved value.
#pragma once

#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/ir/named_value.h>

#include "actnn/passes/ir_builder.h"  // replaceNode, for the rules' lower functions

namespace actnn {
namespace rules {

using torch::jit::Graph;
using torch::jit::NamedValue;
using torch::jit::Node;
using torch::jit::Value;

class RuleContext {
 public:
  virtual ~RuleContext() = default;
  virtual Node* node() const = 0;
  Value* input(size_t i) const { return node()->input(i); }
  Value* output(size_t i) const { return node()->output(i); }

  // Gradient flowing into output i (a B value), or nullptr when none does.
  virtual Value* grad(size_t output) = 0;
  // Same, with zeros of the output's shape when none does.
  virtual Value* gradOrZeros(size_t output) = 0;
  // Whether forward input i needs a gradient.
  virtual bool needsGrad(size_t input) const = 0;
  bool anyNeedsGrad(std::initializer_list<size_t> inputs) const {
    for (size_t i : inputs)
      if (needsGrad(i)) return true;
    return false;
  }
  // Adds g to the gradient of forward input i (only if it needs one).
  virtual void setGrad(size_t input, Value* g) = 0;
  virtual void setGradOf(Value* forward_value, Value* g) = 0;

  // The B value for forward value v: v joins the saved set (once). Constants
  // are copied into B instead.
  virtual Value* save(Value* v) = 0;
  // aten::size(v) computed in F right after v is defined, saved.
  virtual Value* saveSizes(Value* v) = 0;
  // A B tensor with v's sizes, dtype and device but no storage (a zero
  // expanded to the sizes), for backward ops that read only the metadata of
  // an argument (pooling's `self`): v itself is not saved.
  virtual Value* saveShapeOnly(Value* v) = 0;
  // Forward-side helper: `kind(args)` inserted in F right before the node,
  // single output.
  virtual Value* forwardOp(c10::Symbol kind, const std::vector<NamedValue>& args) = 0;
  // The same after the node (it may read the node's outputs); successive
  // calls for one node insert in call order.
  virtual Value* forwardOpAfter(c10::Symbol kind, const std::vector<NamedValue>& args) = 0;

  // Emits `kind(args)` into B; args are B values or constants.
  virtual Node* opNode(c10::Symbol kind, const std::vector<NamedValue>& args,
                       const std::vector<NamedValue>& kwargs = {}) = 0;
  Value* op(c10::Symbol kind, const std::vector<NamedValue>& args, const std::vector<NamedValue>& kwargs = {}) {
    Node* n = opNode(kind, args, kwargs);
    return n->output();
  }
  Value* op(const char* qualified, const std::vector<NamedValue>& args) {
    return op(c10::Symbol::fromQualString(qualified), args);
  }
  virtual Value* constant(const c10::IValue& v) = 0;
  virtual Value* none() = 0;
  // Inlines a helper written in TorchScript (rules/helpers.cpp) into B.
  virtual Value* helper(const std::string& name, const std::vector<Value*>& args) = 0;
  virtual Graph& backward() = 0;
};

// Replaces `node` in F by a new node (with the node's source range) whose
// first outputs take over the node's outputs; returns the new node.
using LowerFn = std::function<Node*(Node* node, Graph& forward)>;
using BackwardFn = std::function<void(RuleContext&)>;

// Why a rule cannot differentiate this node ("" when it can): an argument it
// needs constant is not, a mode it does not cover. autodiff then treats the
// node as having no rule (the autograd fallback takes it).
using RefuseFn = std::function<std::string(const Node* node)>;

struct RuleSpec {
  std::string schema;  // matched with Node::matches
  LowerFn lower;       // optional
  BackwardFn backward; // optional when `lower` produces a node with its own rule
  RefuseFn refuse;     // optional
};

// A RefuseFn: input `i` must be a constant (of any value).
RefuseFn needsConstant(size_t i, const char* what);

void registerConvolutionRules(std::vector<RuleSpec>& rules);
void registerLinearRules(std::vector<RuleSpec>& rules);
void registerNormRules(std::vector<RuleSpec>& rules);
void registerActivationRules(std::vector<RuleSpec>& rules);
void registerPoolingRules(std::vector<RuleSpec>& rules);
void registerUpsampleRules(std::vector<RuleSpec>& rules);
void registerReductionRules(std::vector<RuleSpec>& rules);
void registerElementwiseRules(std::vector<RuleSpec>& rules);
void registerShapeRules(std::vector<RuleSpec>& rules);
void registerScatterRules(std::vector<RuleSpec>& rules);
void registerLossRules(std::vector<RuleSpec>& rules);

// All rules, keyed by op symbol.
const std::unordered_map<c10::Symbol, std::vector<RuleSpec>>& ruleTable();
const RuleSpec* findRule(const Node* node);
// "aten::conv2d, aten::relu, ..." for error messages.
std::string supportedOps();

// Ops whose tensor outputs never carry a gradient (comparisons, *_like
// constructors, random sampling, detach).
bool isNonDifferentiable(const Node* node);

// The autograd fallback (rules/fallback.cpp): a node with no rule runs in F
// under LibTorch autograd. `captured`: the differentiable values it reads
// (from its blocks too); `outputs`: what the rest of F reads instead of its
// tensor and tensor-list outputs; `end`: the node whose output (the tape) B
// needs.
struct FallbackRegion {
  Node* end = nullptr;
  std::vector<Value*> captured;
  std::vector<Value*> outputs;
};
// Why n cannot use the fallback ("" when it can).
std::string fallbackUnsupported(Node* n, const std::function<bool(Value*)>& needs_grad);
FallbackRegion wrapInFallback(Node* n, const std::function<bool(Value*)>& needs_grad);
// Emits B's call of the recorded graph; grad_of(v): the gradient of F value v, or nullptr.
void fallbackBackward(RuleContext& c, const FallbackRegion& r, const std::function<Value*(Value*)>& grad_of);
// The ops wrapInFallback inserts, and the ones among them that pass outputs on.
bool isFallbackOp(const Node* n);
bool isFallbackOutput(const Node* n);

// The TorchScript source of a helper's function graph.
std::shared_ptr<Graph> helperGraph(const std::string& name);


}  // namespace rules
}  // namespace actnn
