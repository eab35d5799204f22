#include "actnn/passes/ir.h"

#include <torch/csrc/jit/runtime/operator.h>

#include <sstream>

#include "actnn/passes/pass.h"

namespace actnn {
namespace {

std::string nodeText(const torch::jit::Node* n) {
  std::ostringstream os;
  n->print(os, 0, nullptr, /*print_source_locations=*/false, /*print_attributes=*/true, /*print_scopes=*/false,
           /*print_body=*/false);
  std::string text = os.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  const size_t start = text.find_first_not_of(' ');
  return start == std::string::npos ? text : text.substr(start);
}

[[noreturn]] void invalid(const torch::jit::Node* n, const std::string& why) {
  throw CompileError("the graph text is not valid IR: `" + nodeText(n) + "`: " + why);
}

// What the passes assume of every node and LibTorch does not check when it
// parses graph text (its own checks are internal asserts, or none: a
// prim::GetAttr without an object crashes constant propagation).
// A node of an op LibTorch knows only by its registered overloads must match
// one of them: alias analysis, which every pass runs, asserts otherwise.
void requireSchema(const torch::jit::Node* n) {
  const c10::Symbol kind = n->kind();
  const auto& overloads = torch::jit::getAllOperatorsFor(kind);
  if (overloads.empty()) invalid(n, "no operator " + std::string(kind.toQualString()) + " is registered");
  if (!n->maybeSchema()) {
    std::string schemas;
    for (const auto& op : overloads) {
      std::ostringstream os;
      os << op->schema();
      schemas += "\n  " + os.str();
    }
    invalid(n, "its operands (" + std::to_string(n->inputs().size()) + ") and their types match no schema of " +
                   kind.toQualString() + ":" + schemas);
  }
}

// A value whose type still holds a type variable (`%x : a`) is no program
// LibTorch can run; alias analysis asserts on the first op that reads one.
// `n` is the node that declares the values; none for the graph's inputs.
void requireConcreteTypes(const torch::jit::Node* n, at::ArrayRef<const torch::jit::Value*> values,
                          const char* what) {
  for (const torch::jit::Value* v : values) {
    if (!v->type()->hasFreeVariables()) continue;
    const std::string why = std::string(what) + " %" + v->debugName() + " has type " + v->type()->repr_str() +
                            ", which holds a type variable";
    if (!n) throw CompileError("the graph text is not valid IR: " + why);
    invalid(n, why);
  }
}

// What flows into a block's parameters and out of its results must fit the
// types declared there (graph text can declare anything).
void requireSubtypes(const torch::jit::Node* n, at::ArrayRef<const torch::jit::Value*> from,
                     at::ArrayRef<const torch::jit::Value*> to, const char* what) {
  for (size_t i = 0; i < from.size() && i < to.size(); ++i)
    if (!from[i]->type()->isSubtypeOf(*to[i]->type()))
      invalid(n, std::string(what) + " " + std::to_string(i) + " has type " + from[i]->type()->repr_str() +
                     " where " + to[i]->type()->repr_str() + " is declared");
}

void lintBlock(const torch::jit::Block* block) {
  requireConcreteTypes(block->owningNode(), block->inputs(), block->owningNode() ? "the block parameter" : "the input");
  for (const torch::jit::Node* n : block->nodes()) {
    requireConcreteTypes(n, n->outputs(), "the result");
    const c10::Symbol kind = n->kind();
    const std::string ns = kind.ns().toUnqualString();
    if (ns == "aten" || ns == "actnn") {
      requireSchema(n);
    } else if (kind == c10::prim::GetAttr || kind == c10::prim::SetAttr) {
      const size_t operands = kind == c10::prim::GetAttr ? 1 : 2;
      if (n->inputs().size() != operands || !n->hasAttribute(c10::attr::name))
        invalid(n, std::string(kind.toQualString()) + " needs " + std::to_string(operands) +
                       " operand(s) and a name attribute");
      if (!n->input(0)->type()->cast<c10::ClassType>())
        invalid(n, std::string(kind.toQualString()) + " needs an object as its first operand, not a " +
                       n->input(0)->type()->repr_str());
    } else if (kind == c10::prim::Constant) {
      if (n->outputs().size() != 1) invalid(n, "a constant has one output");
      if (!n->hasAttribute(c10::attr::value) && !n->output()->type()->cast<c10::NoneType>())
        invalid(n, "a constant of type " + n->output()->type()->repr_str() + " needs a value attribute");
    } else if (kind == c10::prim::If) {
      if (n->inputs().size() != 1 || n->blocks().size() != 2 || !n->input(0)->type()->cast<c10::BoolType>())
        invalid(n, "prim::If takes one bool condition and has two blocks");
      for (const torch::jit::Block* b : n->blocks()) requireSubtypes(n, b->outputs(), n->outputs(), "branch result");
    } else if (kind == c10::prim::Loop) {
      if (n->inputs().size() < 2 || n->blocks().size() != 1)
        invalid(n, "prim::Loop takes a trip count and a condition and has one block");
      const torch::jit::Block* body = n->blocks()[0];
      if (body->inputs().empty() || body->outputs().empty())
        invalid(n, "prim::Loop's body takes the iteration number and returns the condition first");
      // inputs: trip count, condition, carried values; body parameters: the
      // iteration, carried values; body results: condition, carried values.
      requireSubtypes(n, n->inputs().slice(2), body->inputs().slice(1), "carried value");
      requireSubtypes(n, body->outputs().slice(1), body->inputs().slice(1), "the body's carried result");
      requireSubtypes(n, body->outputs().slice(1), n->outputs(), "the body's carried result");
    } else if (!torch::jit::aliasAnalysisHasSpecialCaseFor(kind)) {  // prim::LiCstonstruct, a mistyped op
      requireSchema(n);
    }
    for (const torch::jit::Block* b : n->blocks()) lintBlock(b);
  }
}

}  // namespace

const char* roleName(InputRole role) {
  switch (role) {
    case InputRole::Input: return "input";
    case InputRole::Parameter: return "parameter";
    case InputRole::Buffer: return "buffer";
  }
  return "?";
}

const char* savedKindName(SavedKind kind) {
  switch (kind) {
    case SavedKind::Held: return "held";
    case SavedKind::Meta: return "meta";
    case SavedKind::Statistic: return "statistic";
    case SavedKind::Mask: return "mask";
    case SavedKind::PoolIndex: return "pool-index";
    case SavedKind::Activation: return "activation";
    case SavedKind::Other: return "other";
    case SavedKind::Branch: return "branch";
    case SavedKind::Fallback: return "fallback";
  }
  return "?";
}

TrainingIR TrainingIR::fromModule(const torch::jit::Module& module, const std::string& method) {
  auto found = module.find_method(method);
  if (!found) throw CompileError("module " + module.type()->str() + " has no " + method + " method");
  TrainingIR ir;
  ir.graph = found->graph()->copy();
  ir.module = module;
  ir.method = method;
  return ir;
}

TrainingIR TrainingIR::fromGraph(std::shared_ptr<torch::jit::Graph> graph) {
  lintBlock(graph->block());
  try {
    graph->lint();
  } catch (const c10::Error& e) {
    throw CompileError(std::string("the graph text is not valid IR (LibTorch's lint): ") + e.what_without_backtrace());
  }
  TrainingIR ir;
  ir.graph = std::move(graph);
  ir.lowered = true;
  for (auto* input : ir.graph->inputs()) {
    InputInfo info;
    info.name = input->debugName();
    info.role = InputRole::Input;
    info.requires_grad = input->type()->isSubtypeOf(*c10::TensorType::get());
    ir.inputs.push_back(info);
  }
  return ir;
}

}  // namespace actnn
