// The autograd fallback: the rule of last resort for a node with no
// derivative rule (an op, or control flow whose condition is data). The node
// runs in F under LibTorch autograd between actnn::fallback_begin and
// actnn::fallback_end, on leaves cut from its differentiable inputs (also
// those its blocks read from outside); the rest of F reads its outputs
// through actnn::fallback_output. B hands the outputs' gradients to
// actnn::fallback_backward, which runs the recorded graph once. The graph
// shape and the runtime side: runtime/include/actnn/runtime/fallback.h.
//
// What the op's backward saves stays as autograd saves it (uncompressed);
// saved-set classifies the tape as `fallback` and actnn-opt --report shows
// the bytes it keeps, so a user sees what a rule would save.
#include <algorithm>

#include "actnn/passes/pass.h"
#include "rules.h"

namespace actnn {
namespace rules {
namespace {

using c10::Symbol;

Symbol actnnOp(const char* name) { return Symbol::fromQualString(std::string("actnn::") + name); }

bool isTensor(const Value* v) { return v->type()->isSubtypeOf(*c10::TensorType::get()); }
bool isTensorList(const Value* v) { return v->type()->isSubtypeOf(*c10::ListType::ofTensors()); }

bool isInside(const Node* user, const Node* n) {
  for (const torch::jit::Block* b = user->owningBlock(); b && b->owningNode(); b = b->owningNode()->owningBlock())
    if (b->owningNode() == n) return true;
  return false;
}

// Differentiable values n reads: its inputs, then what its blocks read from
// outside n, in first-use order.
void collectCaptured(Node* n, Node* region, const std::function<bool(Value*)>& needs_grad,
                     std::vector<Value*>& out) {
  for (Value* v : n->inputs()) {
    if (!needs_grad(v)) continue;
    if (n != region && v->node()->owningBlock() && isInside(v->node(), region)) continue;  // defined inside
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
  }
  for (auto* b : n->blocks())
    for (Node* inner : b->nodes()) collectCaptured(inner, region, needs_grad, out);
  for (auto* b : n->blocks()) {
    for (Value* v : b->outputs()) {
      if (!needs_grad(v) || isInside(v->node(), region) || v->node() == region) continue;
      if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    }
  }
}

Value* listOf(Graph& g, const c10::TypePtr& element, const std::vector<Value*>& items) {
  return g.insertNode(g.createList(element, items))->output();
}

}  // namespace

bool isFallbackOp(const Node* n) {
  static const Symbol kinds[] = {actnnOp("fallback_begin"), actnnOp("fallback_leaf"), actnnOp("fallback_leaves"),
                                 actnnOp("fallback_end"), actnnOp("fallback_output"), actnnOp("fallback_outputs")};
  return std::find(std::begin(kinds), std::end(kinds), n->kind()) != std::end(kinds);
}

bool isFallbackOutput(const Node* n) {
  return n->kind() == actnnOp("fallback_output") || n->kind() == actnnOp("fallback_outputs");
}

std::string fallbackUnsupported(Node* n, const std::function<bool(Value*)>& needs_grad) {
  for (const Value* o : n->outputs())
    if (!isTensor(o) && !isTensorList(o) && carriesTensors(o->type()))
      return "output %" + o->debugName() + " has type " + o->type()->repr_str() +
             "; the autograd fallback passes on tensors and lists of tensors only";
  // The node reads leaves (a new list for a list): a write it makes into a
  // differentiable value from outside would not reach that value.
  std::vector<Value*> captured;
  collectCaptured(n, n, needs_grad, captured);
  std::string written;
  std::function<void(Node*)> scan = [&](Node* inner) {
    for (size_t i = 0; i < inner->inputs().size() && written.empty(); ++i) {
      Value* v = inner->input(i);
      if (std::find(captured.begin(), captured.end(), v) != captured.end() && writesOperand(torch::jit::Use(inner, i)))
        written = v->debugName();
    }
    for (auto* b : inner->blocks())
      for (Node* x : b->nodes()) scan(x);
  };
  scan(n);
  if (!written.empty())
    return "it writes %" + written + ", a differentiable value from outside it, in place; under the fallback it "
           "reads a stand-in for that value, so the write would not reach it";
  return "";
}

FallbackRegion wrapInFallback(Node* n, const std::function<bool(Value*)>& needs_grad) {
  Graph& f = *n->owningGraph();
  FallbackRegion r;
  collectCaptured(n, n, needs_grad, r.captured);
  std::string op = n->kind().toQualString();
  const std::string where = sourceLocation(n);
  if (!where.empty()) op += " at " + where;

  torch::jit::WithInsertPoint before(n);
  Value* previous = insertValue(f, actnnOp("fallback_begin"), {}, n->sourceRange());
  std::vector<Value*> input_groups;
  for (Value* v : r.captured) {
    const bool list = isTensorList(v);
    Value* leaf = insertValue(f, actnnOp(list ? "fallback_leaves" : "fallback_leaf"), {v}, n->sourceRange());
    leaf->setType(v->type());
    for (const auto& use : std::vector<torch::jit::Use>(v->uses()))
      if (use.user == n || isInside(use.user, n)) use.user->replaceInput(use.offset, leaf);
    input_groups.push_back(list ? leaf : listOf(f, c10::TensorType::get(), {leaf}));
  }

  torch::jit::WithInsertPoint after(n->next());
  std::vector<Value*> output_groups;
  std::vector<Value*> outputs;
  for (Value* o : n->outputs()) {
    if (!isTensor(o) && !isTensorList(o)) continue;
    outputs.push_back(o);
    output_groups.push_back(isTensorList(o) ? o : listOf(f, c10::TensorType::get(), {o}));
  }
  Value* inputs_list = listOf(f, c10::ListType::ofTensors(), input_groups);
  Value* outputs_list = listOf(f, c10::ListType::ofTensors(), output_groups);
  Node* end = insertOp(f, actnnOp("fallback_end"), {previous, f.insertConstant(op), inputs_list, outputs_list},
                       n->sourceRange());
  r.end = end;
  for (Value* o : outputs) {
    const bool list = isTensorList(o);
    Value* d = insertValue(f, actnnOp(list ? "fallback_outputs" : "fallback_output"), {end->output(), o},
                           n->sourceRange());
    d->setType(o->type());
    o->replaceAllUsesAfterNodeWith(d->node(), d);
    r.outputs.push_back(d);
  }
  return r;
}

void fallbackBackward(RuleContext& c, const FallbackRegion& r, const std::function<Value*(Value*)>& grad_of) {
  Graph& b = c.backward();
  std::vector<Value*> groups;
  bool any = false;
  for (Value* d : r.outputs) {
    Value* g = grad_of(d);
    any |= g != nullptr;
    if (isTensorList(d))
      groups.push_back(g ? g : listOf(b, c10::TensorType::get(), {}));
    else
      groups.push_back(listOf(b, c10::TensorType::get(), g ? std::vector<Value*>{g} : std::vector<Value*>{}));
  }
  if (!any) return;
  Value* tape = c.save(r.end->output());
  Value* grads = c.op(actnnOp("fallback_backward"), {tape, listOf(b, c10::ListType::ofTensors(), groups)});
  for (size_t i = 0; i < r.captured.size(); ++i) {
    Value* group = c.op(c10::aten::__getitem__, {grads, c.constant(int64_t(i))});
    group->setType(c10::ListType::ofTensors());
    Value* g = group;
    if (!isTensorList(r.captured[i])) {
      g = c.op(c10::aten::__getitem__, {group, c.constant(int64_t(0))});
      g->setType(c10::TensorType::get());
    }
    c.setGradOf(r.captured[i], g);
  }
}

}  // namespace rules
}  // namespace actnn
