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
    Value* out = node_->output(i);
    Value* sizes = saveSizes(out);
    return op(c10::aten::zeros, {sizes}, {NamedValue("dtype", saveDtype(out)), NamedValue("layout", none()),
                                          NamedValue("device", saveDevice(out)), NamedValue("pin_memory", none())});
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
    it->second = isTensorList(v) ? helper("add_grad_lists", {it->second, g}) : op(c10::aten::add, {it->second, g});
  }
  Value* save(Value* v) override {
    if (v->node()->kind() == c10::prim::Constant) {
      auto c = torch::jit::toIValue(v);
      Value* copy = b_->insertConstant(*c);
      copy->setType(v->type());
      return copy;
    }
    auto& uses = uses_[v];
    if (node_ && (uses.empty() || uses.back().consumer != node_)) {
      Value* g = node_->outputs().empty() ? nullptr : grad(0);
      uses.push_back({node_, g});
    }
    auto it = saved_.find(v);
    if (it != saved_.end()) return it->second;
    Value* in = b_->addInput(v->hasDebugName() ? v->debugName() : "");
    in->setType(v->type());
    saved_.emplace(v, in);
    saved_order_.push_back(v);
    saved_by_.emplace(v, node_);
    return in;
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
    TORCH_INTERNAL_ASSERT(f_.outputs().size() == 1);
    Value* result = build(f_.outputs()[0]);
    if (diag_.hasErrors()) return;
    builder->registerOutput(result);
    while (!f_.outputs().empty()) f_.eraseOutput(0);
    for (Value* leaf : leaves) f_.registerOutput(leaf);
    torch::jit::EliminateDeadCode(f_.block());
    ir_.output_builder = builder;
    ir_.num_outputs = leaves.size();
  }

  bool usesRequiringGrad(const torch::jit::Block* block) const {
    for (const Node* n : block->nodes()) {
      for (const Value* v : n->inputs())
        if (rg_.count(const_cast<Value*>(v))) return true;
      for (const auto* b : n->blocks())
        if (usesRequiringGrad(b)) return true;
    }
    return false;
  }

  void analyze() {
    rg_.clear();
    fallback_candidates_.clear();
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
        if (tensor_out)
          noRule(n, std::string(n->kind().toQualString()) +
                        " produces tensors from values that require grad (its condition or trip count is data; "
                        "shape specialization, --input-shape, folds the ones that depend only on sizes)");
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
    std::vector<Node*> nodes(f_.nodes().begin(), f_.nodes().end());
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
    std::vector<Node*> nodes(f_.nodes().begin(), f_.nodes().end());
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
      const auto* rule = rules::findRule(node_);
      TORCH_INTERNAL_ASSERT(rule && rule->backward, "no backward for ", node_->kind().toQualString(),
                            " after lowering");
      rule->backward(*this);
      ++ir_.rule_ops;
    }
    node_ = nullptr;
    std::reverse(ir_.fallback_ops.begin(), ir_.fallback_ops.end());  // in F's order
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
