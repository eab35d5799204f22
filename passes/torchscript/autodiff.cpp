// autodiff: split the lowered program into a forward graph F and a backward
// graph B joined by an explicit saved set.
//
//   graph(%x, %w):                   F: graph(%x, %w):
//     %y = aten::relu(%x)                 %y = aten::relu(%x)
//     %z = aten::mul(%y, %w)              %z = aten::mul(%y, %w)
//     return (%z)                         return (%z, %y, %w)      # outputs, saved...
//                                    B: graph(%grad_z, %y, %w):
//                                         %gy = aten::mul(%grad_z, %w)  ...
//                                         return (%gx, %gw)
//
// Steps: flatten the result (tuples, lists, dicts of tensors) into F's first
// outputs and keep a small graph that rebuilds it; find the values that
// require grad; let rules rewrite forward nodes that hide what backward needs
// (batch_norm -> native_batch_norm, dropout -> native_dropout, ...); then walk
// F backwards, emitting each node's derivative (rules/*.cpp) into B. A value B
// uses is saved once, however many rules use it.
// A node with no rule on values that require grad (an op, or control flow
// producing such tensors: its condition is data) runs under LibTorch
// autograd instead (the autograd fallback, rules/fallback.cpp).
// Rejected, with the node and its source location: in-place ops on values
// that require grad, mutation of a saved value after it is saved, and, with
// fallback=false, what the fallback would have taken.
// Options: input-grads=true|false: whether B returns gradients of the user
// inputs too (the runtime drops the work when no input requires grad);
// fallback=true|false: false keeps the error for a node with no rule.
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <algorithm>
#include <functional>
#include <unordered_map>
#include <unordered_set>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/pass.h"
#include "rules/rules.h"

namespace actnn {
namespace {

using torch::jit::Graph;
using torch::jit::NamedValue;
using torch::jit::Node;
using torch::jit::Value;
using torch::jit::WithInsertPoint;

bool isTensor(const Value* v) { return v->type()->isSubtypeOf(*c10::TensorType::get()); }
bool isTensorList(const Value* v) {
  return v->type()->isSubtypeOf(*c10::ListType::ofTensors());
}

class Differentiator : public rules::RuleContext {
 public:
  Differentiator(TrainingIR& ir, Graph& f, Diagnostics& diag, bool fallback)
      : ir_(ir), f_(f), diag_(diag), fallback_(fallback) {
    b_ = std::make_shared<Graph>();
  }

  // ---- RuleContext -------------------------------------------------------
  Node* node() const override { return node_; }
  Value* grad(size_t i) override {
    auto it = grads_.find(node_->output(i));
    return it == grads_.end() ? nullptr : it->second;
  }
  Value* gradOrZeros(size_t i) override {
    if (Value* g = grad(i)) return g;
    return zerosOf(node_->output(i));
  }
  Value* saveShapeOnly(Value* v) override {
    Value* zero = op(c10::aten::zeros, {constant(std::vector<int64_t>{})},
                     {NamedValue("dtype", saveDtype(v)), NamedValue("layout", none()),
                      NamedValue("device", saveDevice(v)), NamedValue("pin_memory", none())});
    return op(c10::aten::expand, {zero, saveSizes(v)});
  }
  bool needsGrad(size_t i) const override {
    Value* v = node_->input(i);
    return rg_.count(v) > 0;
  }
  void setGrad(size_t i, Value* g) override { setGradOf(node_->input(i), g); }
  void setGradOf(Value* v, Value* g) override {
    if (!rg_.count(v) || g == nullptr) return;
    auto it = grads_.find(v);
    if (it == grads_.end()) {
      grads_[v] = g;
      return;
    }
    const bool optional = it->second->type()->kind() == c10::TypeKind::OptionalType ||
                          g->type()->kind() == c10::TypeKind::OptionalType;
    it->second = isTensorList(v) ? helper("add_grad_lists", {it->second, g})
                 : optional      ? helper("add_optional_grads", {it->second, g})
                                 : op(c10::aten::add, {it->second, g});
  }
  Value* save(Value* v) override {
    if (v->node()->kind() == c10::prim::Constant) {
      auto c = torch::jit::toIValue(v);
      Value* copy = b_->insertConstant(*c);
      copy->setType(v->type());
      return copy;
    }
    auto& uses = uses_[escaped_.count(v) ? escaped_[v] : v];
    if (node_ && (uses.empty() || uses.back().consumer != node_)) {
      Value* g = node_->outputs().empty() ? nullptr : grad(0);
      uses.push_back({node_, g});
    }
    auto it = saved_.find(v);
    if (it != saved_.end()) return it->second;
    // A value made inside a branch leaves F through its prim::If (None
    // from the other branch); B's matching branch unwraps it.
    Value* top = escape(v);
    if (top != v) {
      escaped_[v] = top;
      uses_[top] = std::move(uses_[v]);
      uses_.erase(v);
    }
    Value* in = b_->addInput(v->hasDebugName() ? v->debugName() : "");
    in->setType(top->type());
    saved_order_.push_back(top);
    saved_by_.emplace(top, node_);
    Value* b_value = top == v ? in : b_->insertUncheckedCast(in, v->type());
    saved_.emplace(v, b_value);
    return b_value;
  }
  Value* saveSizes(Value* v) override { return saveMeta(v, c10::aten::size, sizes_); }
  Value* forwardOp(c10::Symbol kind, const std::vector<NamedValue>& args) override {
    WithInsertPoint guard(node_);
    return insertValue(f_, kind, args, node_->sourceRange());
  }
  Value* forwardOpAfter(c10::Symbol kind, const std::vector<NamedValue>& args) override {
    Node* anchor = after_owner_ == node_ && after_ ? after_ : node_;
    WithInsertPoint guard(anchor->next());
    Value* v = insertValue(f_, kind, args, node_->sourceRange());
    after_ = v->node();
    after_owner_ = node_;
    return v;
  }
  Node* opNode(c10::Symbol kind, const std::vector<NamedValue>& args,
               const std::vector<NamedValue>& kwargs) override {
    return insertOp(*b_, kind, args,
                    node_ ? c10::optional<torch::jit::SourceRange>(node_->sourceRange()) : c10::nullopt, kwargs);
  }
  Value* constant(const c10::IValue& v) override { return b_->insertConstant(v); }
  Value* none() override {
    Value* n = b_->insertConstant(c10::IValue());
    n->setType(c10::NoneType::get());
    return n;
  }
  Value* helper(const std::string& name, const std::vector<Value*>& args) override {
    auto g = rules::helperGraph(name);
    return torch::jit::insertGraph(*b_, *g, args).at(0);
  }
  Graph& backward() override { return *b_; }

  // ---- driver ------------------------------------------------------------
  void run(bool input_grads) {
    flattenOutputs();
    if (diag_.hasErrors()) return;
    analyze();
    if (diag_.hasErrors()) return;
    lower();
    analyze();
    if (diag_.hasErrors()) return;
    wrapFallbacks();
    analyze();
    if (diag_.hasErrors()) return;
    differentiate();
    if (diag_.hasErrors()) return;
    checkSavedNotMutated();
    if (diag_.hasErrors()) return;

    std::vector<size_t> grad_inputs;
    for (size_t i = 0; i < ir_.inputs.size(); ++i) {
      const auto& info = ir_.inputs[i];
      if (!info.requires_grad || (info.role == InputRole::Input && !input_grads)) continue;
      auto it = grads_.find(f_.inputs()[i]);
      b_->registerOutput(it != grads_.end() ? it->second : none());
      grad_inputs.push_back(i);
    }
    for (Value* v : saved_order_) f_.registerOutput(v);
    torch::jit::EliminateDeadCode(b_);
    recordSavedUses();
    ir_.backward = b_;
    ir_.grad_inputs = grad_inputs;
  }

 private:
  // Zeros of v's sizes, dtype and device, in B.
  Value* zerosOf(Value* v) {
    Value* sizes = saveSizes(v);
    return op(c10::aten::zeros, {sizes}, {NamedValue("dtype", saveDtype(v)), NamedValue("layout", none()),
                                          NamedValue("device", saveDevice(v)), NamedValue("pin_memory", none())});
  }

  // v itself when F's top level defines it; else an output of each prim::If
  // around it, which returns v from v's branch and None from the other.
  Value* escape(Value* v) {
    while (v->node()->owningBlock() != f_.block()) {
      torch::jit::Block* branch = v->node()->owningBlock();
      Node* owner = branch->owningNode();
      TORCH_INTERNAL_ASSERT(owner->kind() == c10::prim::If, "a saved value inside ", owner->kind().toQualString());
      const c10::TypePtr type =
          v->type()->kind() == c10::TypeKind::OptionalType ? v->type() : c10::OptionalType::create(v->type());
      for (torch::jit::Block* b : owner->blocks()) {
        if (b == branch) {
          b->registerOutput(v);
          continue;
        }
        WithInsertPoint guard(b->return_node());
        Value* nothing = f_.insertConstant(c10::IValue());
        nothing->setType(c10::NoneType::get());
        b->registerOutput(nothing);
      }
      v = owner->addOutput()->setType(type);
    }
    return v;
  }

  // f(v) computed once in F right after v, saved.
  Value* saveMeta(Value* v, c10::Symbol f, std::unordered_map<Value*, Value*>& cache) {
    auto it = cache.find(v);
    if (it == cache.end()) it = cache.emplace(v, forwardAfter(v, f, {v})).first;
    return save(it->second);
  }
  Value* saveDtype(Value* v) { return saveMeta(v, c10::prim::dtype, dtypes_); }
  Value* saveDevice(Value* v) { return saveMeta(v, c10::prim::device, devices_); }

  Value* forwardAfter(Value* v, c10::Symbol kind, const std::vector<NamedValue>& args) {
    Node* def = v->node();
    Node* point = def->kind() == c10::prim::Param ? f_.block()->nodes().front() : def->next();
    WithInsertPoint guard(point);
    return insertValue(f_, kind, args);
  }

  // Program result -> flat tensor outputs plus the graph that rebuilds it.
  void flattenOutputs() {
    auto builder = std::make_shared<Graph>();
    std::vector<Value*> leaves;
    std::function<Value*(Value*)> build = [&](Value* v) -> Value* {
      if (isTensor(v)) {
        leaves.push_back(v);
        Value* in = builder->addInput("out" + std::to_string(leaves.size() - 1));
        in->setType(v->type());
        return in;
      }
      Node* n = v->node();
      if (n->kind() == c10::prim::Constant && !carriesTensors(v->type())) {
        return builder->insertConstant(*torch::jit::toIValue(v));
      }
      if (n->kind() == c10::prim::TupleConstruct || n->kind() == c10::prim::ListConstruct ||
          n->kind() == c10::prim::DictConstruct) {
        std::vector<Value*> ins;
        for (Value* i : n->inputs()) {
          Value* built = build(i);
          if (!built) return nullptr;
          ins.push_back(built);
        }
        Node* clone = builder->create(n->kind(), ins, 1);
        clone->output()->setType(v->type());
        builder->insertNode(clone);
        return clone->output();
      }
      diag_.error(n, "the forward result contains a value of type " + v->type()->repr_str() +
                         "; results must be tensors or tuples, lists and dicts of tensors");
      return nullptr;
    };
    if (f_.outputs().size() != 1) {  // graph text may return several values: one tuple of them
      std::vector<Value*> outs(f_.outputs().begin(), f_.outputs().end());
      WithInsertPoint guard(f_.return_node());
      Value* tuple = f_.insertNode(f_.createTuple(outs))->output();
      while (!f_.outputs().empty()) f_.eraseOutput(0);
      f_.registerOutput(tuple);
    }
    Value* result = build(f_.outputs()[0]);
    if (diag_.hasErrors()) return;
    builder->registerOutput(result);
    while (!f_.outputs().empty()) f_.eraseOutput(0);
    for (Value* leaf : leaves) f_.registerOutput(leaf);
    torch::jit::EliminateDeadCode(f_.block());
    ir_.output_builder = builder;
    ir_.num_outputs = leaves.size();
  }

  bool requiresGrad(Value* v, const std::unordered_set<Value*>& made) const {
    return rg_.count(v) > 0 || made.count(v) > 0;
  }

  // Whether a node of `block` (or of a block inside it) reads a value that
  // requires grad: one in rg_ or in `made`.
  bool usesRequiringGrad(const torch::jit::Block* block, const std::unordered_set<Value*>& made = {}) const {
    for (const Node* n : block->nodes()) {
      for (Value* v : const_cast<Node*>(n)->inputs())
        if (requiresGrad(v, made)) return true;
      for (const auto* b : n->blocks())
        if (usesRequiringGrad(b, made)) return true;
    }
    return false;
  }

  void analyze() {
    rg_.clear();
    fallback_candidates_.clear();
    branches_.clear();
    for (size_t i = 0; i < ir_.inputs.size(); ++i)
      if (ir_.inputs[i].requires_grad && isTensor(f_.inputs()[i])) rg_.insert(f_.inputs()[i]);
    for (Node* n : f_.nodes()) {
      if (rules::isFallbackOutput(n)) {
        rg_.insert(n->output());
        continue;
      }
      if (rules::isFallbackOp(n)) continue;
      bool uses = false;
      for (Value* v : n->inputs()) uses |= rg_.count(v) > 0;
      for (auto* b : n->blocks()) uses |= usesRequiringGrad(b);
      if (!uses) continue;
      bool tensor_out = false;
      for (Value* o : n->outputs()) tensor_out |= carriesTensors(o->type());
      if (!n->blocks().empty()) {
        if (!tensor_out) continue;
        std::string why = "its trip count is data";
        if (n->kind() == c10::prim::If) {
          std::unordered_set<Value*> made;
          std::vector<Node*> nested;
          why = branchesUnsupported(n, made, nested);
          if (why.empty()) {
            rg_.insert(made.begin(), made.end());
            branches_.insert(n);
            branches_.insert(nested.begin(), nested.end());
            continue;
          }
        }
        noRule(n, std::string(n->kind().toQualString()) +
                      " produces tensors from values that require grad, and cannot be differentiated: " + why +
                      " (shape specialization, --input-shape, folds control flow that depends only on sizes)");
        continue;
      }
      // Before the non-differentiable shortcut: zero_ or fill_ on a value
      // that requires grad changes its gradient too.
      bool in_place = false;
      if (const auto* schema = n->maybeSchema()) {
        for (size_t i = 0; i < schema->arguments().size() && i < n->inputs().size(); ++i) {
          const auto& alias = schema->arguments()[i].alias_info();
          if (alias && alias->isWrite() && rg_.count(n->input(i))) {
            diag_.error(n, std::string("in-place ") + n->kind().toQualString() +
                               " modifies a value that requires grad (autodiff needs it unchanged)");
            in_place = true;
          }
        }
      }
      if (in_place) continue;
      if (rules::isNonDifferentiable(n) || !tensor_out) continue;
      const auto* rule = rules::findRule(n);
      if (!rule) {
        noRule(n, std::string("no derivative rule for ") + n->kind().toQualString() +
                      (n->maybeSchema() ? " (" + toString(*n->maybeSchema()) + ")" : "") +
                      "\n  supported ops: " + rules::supportedOps());
        continue;
      }
      const std::string refused = rule->refuse ? rule->refuse(n) : "";
      if (!refused.empty()) {
        noRule(n, std::string("the derivative rule for ") + n->kind().toQualString() +
                      " does not take this node: " + refused);
        continue;
      }
      for (Value* o : n->outputs())
        if (isTensor(o) || isTensorList(o)) rg_.insert(o);
    }
  }

  // " at file:line:col", or nothing for graph text.
  static std::string at(const Node* n) {
    const std::string where = sourceLocation(n);
    return where.empty() ? "" : " at " + where;
  }

  // Why the data-dependent prim::If n cannot be differentiated per branch
  // ("" when it can, with the values its branches make that require grad
  // added to `made`, the prim::If nodes inside it to `nested`): each node of
  // its branches that reads such a value
  // must have a rule (or be a prim::If that can be differentiated in turn),
  // and what it returns of them must be tensors.
  std::string branchesUnsupported(Node* n, std::unordered_set<Value*>& made, std::vector<Node*>& nested) {
    for (torch::jit::Block* b : n->blocks()) {
      for (Node* m : b->nodes()) {
        bool uses = false;
        for (Value* v : m->inputs()) uses |= requiresGrad(v, made);
        for (auto* inner : m->blocks()) uses |= usesRequiringGrad(inner, made);
        if (!uses) continue;
        for (Value* v : m->inputs())
          if (requiresGrad(v, made) && !isTensor(v))
            return std::string(m->kind().toQualString()) + " in a branch reads a " + v->type()->repr_str() +
                   " that requires grad" + at(m);
        bool tensor_out = false;
        for (Value* o : m->outputs()) tensor_out |= carriesTensors(o->type());
        if (!m->blocks().empty()) {
          if (!tensor_out) continue;
          if (m->kind() != c10::prim::If) return "a prim::Loop in a branch produces tensors that require grad";
          const std::string why = branchesUnsupported(m, made, nested);
          if (!why.empty()) return why;
          nested.push_back(m);
          continue;
        }
        if (const auto* schema = m->maybeSchema())
          for (size_t i = 0; i < schema->arguments().size() && i < m->inputs().size(); ++i) {
            const auto& alias = schema->arguments()[i].alias_info();
            if (alias && alias->isWrite() && requiresGrad(m->input(i), made))
              return std::string("in-place ") + m->kind().toQualString() +
                     " in a branch modifies a value that requires grad" + at(m);
          }
        if (rules::isNonDifferentiable(m) || !tensor_out) continue;
        const auto* rule = rules::findRule(m);
        if (!rule) return std::string("no derivative rule for ") + m->kind().toQualString() + " in a branch" + at(m);
        const std::string refused = rule->refuse ? rule->refuse(m) : "";
        if (!refused.empty())
          return std::string("the rule for ") + m->kind().toQualString() + " in a branch refuses it: " + refused;
        for (Value* o : m->outputs())
          if (isTensor(o)) made.insert(o);
          else if (carriesTensors(o->type()))
            return std::string(m->kind().toQualString()) + " in a branch makes a " + o->type()->repr_str() +
                   " from values that require grad";
      }
    }
    for (size_t j = 0; j < n->outputs().size(); ++j) {
      bool returned = false;
      for (torch::jit::Block* b : n->blocks()) returned |= requiresGrad(b->outputs()[j], made);
      if (!returned) continue;
      if (!isTensor(n->output(j)))
        return "it returns a " + n->output(j)->type()->repr_str() + " holding values that require grad";
      made.insert(n->output(j));
    }
    return "";
  }

  // n has no rule: the autograd fallback takes it, or (fallback=false, or
  // outputs it cannot pass on) the error stands.
  void noRule(Node* n, const std::string& message) {
    const std::string unsupported =
        fallback_ ? rules::fallbackUnsupported(n, [&](Value* v) { return rg_.count(v) > 0; }) : "";
    if (!fallback_ || !unsupported.empty()) {
      diag_.error(n, message + (fallback_ ? "\n  the autograd fallback cannot take it: " + unsupported
                                          : "\n  (the autograd fallback is off)"));
      return;
    }
    fallback_candidates_.push_back(n);
    for (Value* o : n->outputs())
      if (isTensor(o) || isTensorList(o)) rg_.insert(o);
  }

  void wrapFallbacks() {
    for (Node* n : fallback_candidates_) {
      auto region = rules::wrapInFallback(n, [&](Value* v) { return rg_.count(v) > 0; });
      // Later candidates read these instead of n's outputs.
      rg_.insert(region.outputs.begin(), region.outputs.end());
      fallbacks_.emplace(region.end, std::move(region));
    }
    fallback_candidates_.clear();
  }

  static std::string toString(const c10::FunctionSchema& s) {
    std::ostringstream out;
    out << s;
    return out.str();
  }

  void lower() {
    // Into the branches autodiff differentiates too.
    std::vector<Node*> nodes;
    std::function<void(torch::jit::Block*)> collect = [&](torch::jit::Block* block) {
      for (Node* n : block->nodes()) {
        if (branches_.count(n))
          for (auto* b : n->blocks()) collect(b);
        nodes.push_back(n);
      }
    };
    collect(f_.block());
    for (Node* n : nodes) {
      bool uses = false;
      for (Value* v : n->inputs()) uses |= rg_.count(v) > 0;
      if (!uses) continue;
      const auto* rule = rules::findRule(n);
      if (!rule || !rule->lower || (rule->refuse && !rule->refuse(n).empty())) continue;
      // The replacement's outputs require grad as n's did, so a lowered op
      // that reads them (max_pool2d -> dropout) is lowered too.
      for (Value* o : rule->lower(n, f_)->outputs()) rg_.insert(o);
    }
  }

  void differentiate() {
    for (size_t j = 0; j < ir_.num_outputs; ++j) {
      Value* out = f_.outputs()[j];
      Value* g = b_->addInput("grad_" + (out->hasDebugName() ? out->debugName() : std::to_string(j)));
      g->setType(c10::TensorType::get());
      node_ = nullptr;
      setGradOf(out, g);
    }
    differentiateBlock(f_.block());
    node_ = nullptr;
    std::reverse(ir_.fallback_ops.begin(), ir_.fallback_ops.end());  // in F's order
    std::reverse(ir_.branch_ops.begin(), ir_.branch_ops.end());
  }

  void differentiateBlock(torch::jit::Block* block) {
    std::vector<Node*> nodes(block->nodes().begin(), block->nodes().end());
    for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
      node_ = *it;
      auto fallback = fallbacks_.find(node_);
      if (fallback != fallbacks_.end()) {
        rules::fallbackBackward(*this, fallback->second, [&](Value* v) {
          auto g = grads_.find(v);
          return g == grads_.end() ? nullptr : g->second;
        });
        ir_.fallback_ops.push_back(torch::jit::toIValue(node_->input(1))->toStringRef());
        continue;
      }
      if (rules::isFallbackOp(node_)) continue;
      bool has_grad = false;
      for (Value* o : node_->outputs()) has_grad |= grads_.count(o) > 0;
      if (!has_grad) continue;
      if (branches_.count(node_)) {
        differentiateBranches(node_);
        continue;
      }
      const auto* rule = rules::findRule(node_);
      TORCH_INTERNAL_ASSERT(rule && rule->backward, "no backward for ", node_->kind().toQualString(),
                            " after lowering");
      rule->backward(*this);
      ++ir_.rule_ops;
    }
  }

  // The values requiring grad that n's branches read (or return) but are
  // defined outside n, in a fixed order.
  std::vector<Value*> readFromOutside(Node* n) {
    std::vector<Value*> out;
    std::unordered_set<Value*> seen;
    auto consider = [&](Value* v) {
      if (!rg_.count(v) || seen.count(v)) return;
      for (Node* def = v->node(); def; def = def->owningBlock()->owningNode())
        if (def == n) return;  // made inside n
      seen.insert(v);
      out.push_back(v);
    };
    for (auto* b : n->blocks()) {
      forEachNode(b, [&](Node* m) {
        for (Value* v : m->inputs()) consider(v);
      });
      for (Value* v : b->outputs()) consider(v);
    }
    return out;
  }

  // A data-dependent prim::If: F saves its condition; B branches on it, and
  // each of B's branches runs the backward of F's matching branch. What a
  // branch reads from outside gets its gradient out of B's prim::If; from
  // the branch that did not read it, a graph input (a parameter, a user
  // input) gets None, as autograd leaves it when no path reaches it, and a
  // value F made gets zeros (the backward of what made it needs a tensor; so
  // a parameter whose only path runs through the branch that did not run
  // gets zeros where autograd would leave it None).
  void differentiateBranches(Node* n) {
    Value* flag = save(n->input(0));
    std::vector<Value*> outer = readFromOutside(n);
    std::unordered_map<Value*, Value*> earlier;  // gradients from after n
    for (Value* u : outer) {
      auto it = grads_.find(u);
      if (it == grads_.end()) continue;
      earlier.emplace(u, it->second);
      grads_.erase(it);
    }
    std::vector<Value*> out_grads;
    for (Value* o : n->outputs()) out_grads.push_back(grad(o->offset()));

    Node* b_if = b_->insertNode(b_->create(c10::prim::If, {flag}, 0));
    b_if->setSourceRange(n->sourceRange());
    std::vector<std::unordered_map<Value*, Value*>> partial(n->blocks().size());
    for (size_t k = 0; k < n->blocks().size(); ++k) {
      torch::jit::Block* branch = n->blocks()[k];
      WithInsertPoint guard(b_if->addBlock());
      for (size_t j = 0; j < out_grads.size(); ++j)
        if (out_grads[j]) setGradOf(branch->outputs()[j], out_grads[j]);
      differentiateBlock(branch);
      node_ = n;
      for (Value* u : outer) {
        auto it = grads_.find(u);
        if (it == grads_.end()) continue;
        partial[k].emplace(u, it->second);
        grads_.erase(it);
      }
    }
    for (Value* u : outer) {
      bool any = false, everywhere = true;
      for (const auto& p : partial) {
        any |= p.count(u) > 0;
        everywhere &= p.count(u) > 0 && p.at(u)->type()->kind() != c10::TypeKind::OptionalType;
      }
      if (!any) continue;
      const bool input = u->node()->kind() == c10::prim::Param;
      for (size_t k = 0; k < partial.size(); ++k) {
        torch::jit::Block* b = b_if->blocks()[k];
        auto it = partial[k].find(u);
        if (it != partial[k].end()) {
          b->registerOutput(it->second);
          continue;
        }
        WithInsertPoint guard(b);
        b->registerOutput(input ? none() : zerosOf(u));
      }
      Value* g = b_if->addOutput()->setType(everywhere || !input ? c10::TensorType::get()
                                                                 : c10::OptionalType::ofTensor());
      auto before = earlier.find(u);
      if (before != earlier.end()) {
        grads_[u] = before->second;
        earlier.erase(before);
      }
      setGradOf(u, g);
    }
    for (const auto& [u, g] : earlier) grads_[u] = g;
    ir_.branch_ops.push_back("prim::If" + at(n));
  }

  // ir.saved_uses, with gradients DCE removed from B dropped.
  void recordSavedUses() {
    std::unordered_set<const Value*> live(b_->inputs().begin(), b_->inputs().end());
    forEachNode(b_->block(), [&](Node* n) { live.insert(n->outputs().begin(), n->outputs().end()); });
    ir_.saved_uses.clear();
    for (Value* v : saved_order_) {
      std::vector<SavedUse> uses = uses_[v];
      for (auto& u : uses)
        if (!live.count(u.grad)) u.grad = nullptr;
      ir_.saved_uses.push_back(std::move(uses));
    }
  }

  // A saved value must reach B as it was when saved: no in-place write to it
  // or to any view sharing its storage (detach, view, select, ...) may follow
  // the node that saved it.
  void checkSavedNotMutated() {
    std::unordered_map<const Node*, size_t> position;
    size_t i = 0;
    for (Node* n : f_.nodes()) position[n] = i++;
    std::unordered_map<const Value*, Value*> saved_through;  // family member -> saved value
    for (Value* v : saved_order_)
      for (Value* member : viewFamily(v)) saved_through.emplace(member, v);
    for (Node* n : f_.nodes()) {
      const auto* schema = n->maybeSchema();
      if (!schema) continue;
      for (size_t a = 0; a < schema->arguments().size() && a < n->inputs().size(); ++a) {
        const auto& alias = schema->arguments()[a].alias_info();
        if (!alias || !alias->isWrite()) continue;
        auto through = saved_through.find(n->input(a));
        if (through == saved_through.end()) continue;
        const Node* saver = saved_by_[through->second];
        // A saver inside a branch: where its prim::If is.
        if (saver) saver = topLevelNode(const_cast<Node*>(saver), f_.block());
        if (saver && position[n] > position[saver])
          diag_.error(n, "modifies a value in place after " + std::string(saver->kind().toQualString()) +
                             " saved it for backward" +
                             (n->input(a) == through->second ? "" : " (through a view of it)"));
      }
    }
  }

  TrainingIR& ir_;
  Graph& f_;
  Diagnostics& diag_;
  const bool fallback_;
  std::vector<Node*> fallback_candidates_;
  std::unordered_map<Node*, rules::FallbackRegion> fallbacks_;  // by fallback_end node
  std::unordered_set<Node*> branches_;  // data-dependent prim::If nodes differentiated per branch
  std::unordered_map<Value*, Value*> escaped_;  // saved value made in a branch -> F's output for it
  std::shared_ptr<Graph> b_;
  Node* node_ = nullptr;
  Node* after_ = nullptr;        // the last node forwardOpAfter inserted ...
  Node* after_owner_ = nullptr;  // ... for this node
  std::unordered_set<Value*> rg_;
  std::unordered_map<Value*, Value*> grads_, saved_, sizes_, dtypes_, devices_;
  std::unordered_map<Value*, std::vector<SavedUse>> uses_;
  std::unordered_map<Value*, Node*> saved_by_;
  std::vector<Value*> saved_order_;
};

class Autodiff : public Pass {
 public:
  Autodiff() {
    options_.declare("input-grads", "true", "B also returns gradients of the forward inputs");
    options_.declare("fallback", "true",
                     "a node with no derivative rule runs under LibTorch autograd (false: an error, as --no-fallback)");
  }
  void checkOptions() const override {
    options_.boolean("input-grads");  // each throws naming its option
    options_.boolean("fallback");
  }
  bool run(TrainingIR& ir, Diagnostics& diag) override {
    if (ir.forward) return false;
    if (!ir.lowered) {
      diag.error("the graph still has a module input; run lower-module first");
      return false;
    }
    bool input_grads = options_.boolean("input-grads");
    auto f = ir.graph->copy();
    Differentiator d(ir, *f, diag, options_.boolean("fallback"));
    d.run(input_grads);
    if (diag.hasErrors()) return false;
    ir.forward = f;
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> createAutodiffPass() { return std::make_unique<Autodiff>(); }

}  // namespace actnn
