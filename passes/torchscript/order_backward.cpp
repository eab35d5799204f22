// order-backward: choose the order of B's independent gradient branches so
// that a long branch does not run while a short one's result waits.
//
// autodiff emits derivatives in reverse forward order. In a residual block
// with a projection shortcut (ResNet's downsample) the forward computes the
// main branch, then the shortcut; so B computes the shortcut's gradient first
// and keeps it — a tensor as large as the block's input — alive through the
// whole main branch, together with whatever the shortcut read (the block's
// input, which the main branch's first convolution reads again at the end):
//
//   %gs = <shortcut backward>(%g)          # short: BN, 1x1 conv
//   %gm = <main backward>(%g)              # long: BN, conv, ReLU x 3
//   %gx = aten::add(%gs, %gm, 1)
//
// For every sum of two tensors in B, this pass takes the nodes that exist
// only to compute each operand (its exclusive cone: every output is used by
// the cone itself, by the sum, or only by B's returned gradients). When the
// smaller cone runs entirely before the larger one, it moves, in order, to
// right before the sum: the long branch then runs while only the short
// branch's inputs wait (here %g, at the block output's size). Sums whose
// smaller cone already finishes last or only views its input (a ResNet
// identity shortcut: sum_to_size), whose cones are equal in size, or where
// one side is computed by nodes it shares are left as they are. Nothing changes numerically: the
// same ops run on the same values, in another order.
//
// Cone size counts nodes, a proxy for how much a branch allocates while it
// runs; without shapes at compile time it is what the pass can see.
#include <unordered_set>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/pass.h"

namespace actnn {
namespace {

using torch::jit::Block;
using torch::jit::Node;
using torch::jit::Value;

// A node whose outputs only feed B's returned gradients (the tuple of them).
bool feedsOnlyReturn(Node* user, Block* block) {
  if (user == block->return_node()) return true;
  if (user->kind() != c10::prim::TupleConstruct && user->kind() != c10::prim::ListConstruct) return false;
  for (Value* o : user->outputs())
    for (const auto& u : o->uses())
      if (u.user != block->return_node()) return false;
  return true;
}

bool movable(Node* n) {
  return n->kind() != c10::prim::Constant && n->blocks().empty() && !n->hasSideEffects() &&
         !n->outputs().empty();
}

// The nodes before `sum` that exist only to compute `v`, in B's order.
std::vector<Node*> exclusiveCone(Value* v, Node* sum, Block* block) {
  std::unordered_set<Node*> cone;
  std::vector<Node*> order;
  for (Node* n = sum->prev(); n != block->param_node(); n = n->prev()) {
    if (!movable(n)) continue;
    bool feeds = false, exclusive = true;
    for (Value* o : n->outputs()) {
      for (const auto& use : o->uses()) {
        Node* user = topLevelNode(use.user, block);
        if (user == sum && o == v && sum->input(use.offset) == v) feeds = true;
        else if (cone.count(user)) feeds = true;
        else if (!feedsOnlyReturn(user, block)) exclusive = false;
      }
    }
    if (feeds && exclusive) {
      cone.insert(n);
      order.push_back(n);
    }
  }
  std::reverse(order.begin(), order.end());
  return order;
}

// Whether moving the cone postpones an allocation: it holds a node that is
// not a view or sum_to_size (which returns its input when the sizes match,
// as they do for gradients of a value used without broadcasting).
bool allocates(const std::vector<Node*>& cone) {
  for (Node* n : cone)
    if (n->kind() != c10::aten::sum_to_size && !returnsAlias(n)) return true;
  return false;
}

bool isTensorSum(Node* n) {
  if (n->kind() != c10::aten::add || n->inputs().size() != 3) return false;
  return n->input(0)->type()->isSubtypeOf(*c10::TensorType::get()) &&
         n->input(1)->type()->isSubtypeOf(*c10::TensorType::get()) && n->input(0) != n->input(1);
}

class OrderBackward : public Pass {
 public:
  bool run(TrainingIR& ir, Diagnostics& diag) override {
    if (!ir.backward) {
      diag.error("there is no backward graph yet; run autodiff first");
      return false;
    }
    Block* block = ir.backward->block();
    std::vector<Node*> sums;
    for (Node* n : block->nodes())
      if (isTensorSum(n)) sums.push_back(n);
    bool changed = false;
    for (Node* sum : sums) {
      std::vector<Node*> a = exclusiveCone(sum->input(0), sum, block);
      std::vector<Node*> b = exclusiveCone(sum->input(1), sum, block);
      if (a.empty() || b.empty() || a.size() == b.size()) continue;
      const std::vector<Node*>& small = a.size() < b.size() ? a : b;
      const std::vector<Node*>& large = a.size() < b.size() ? b : a;
      if (!allocates(small) || !small.back()->isBefore(large.back())) continue;  // already finishes last
      for (Node* n : small) n->moveBefore(sum);
      changed = true;
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> createOrderBackwardPass() { return std::make_unique<OrderBackward>(); }

}  // namespace actnn
