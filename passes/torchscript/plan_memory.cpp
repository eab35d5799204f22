// plan-memory (L5): give every packed buffer the device holds during a step a
// numbered slot of one arena, with its lifetime over the timeline "F's
// top-level nodes, then B's". The runtime's Arena (runtime/arena.h) sizes the
// slots from the input's shape, places them (memory_plan.h: the best of
// five greedy orders, refined, checked against the peak of live bytes) and lets
// each producer write into its slice, so the packed values of a step never
// fragment the allocator.
//
//   F:  %p = actnn::compress(%x, %state, 3, 1, %w)    %p = actnn::compress(%x, %state, 3, 1, %w, %arena, 0)
//       %s = actnn::swap_out(%p)                      %s = actnn::swap_out(%p)          # slot 0: [t(p), t(s)]
//   B:  %h = actnn::swap_in(%s)                       %h = actnn::swap_in(%s, %arena, 7) # slot 7 copies slot 0
//       %p2 = actnn::swap_wait(%h)                    %p2 = actnn::swap_wait(%h)
//       %x2 = actnn::dequantize(%p2)                  %x2 = actnn::dequantize(%p2)      # slot 7 ends here
//
// Producers: actnn::compress, pack_mask and pack_pool_index in F (live until
// their last use in F, or, when F returns them, until their last use in B),
// and actnn::swap_in in B (live until the last use of what swap_wait returns).
// F and B take the arena after the compression state. Without schedule-swap
// every packed value lives into B, so the plan is their sum; the pass is
// meant to follow schedule-swap (level L5). Left alone: full-precision values.
#include <unordered_map>

#include <torch/custom_class.h>

#include <torch/csrc/jit/passes/constant_pooling.h>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/pass.h"

namespace actnn {
namespace {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

c10::TypePtr arenaType() {
  static const auto type = actnnClass("Arena");
  return type;
}

class Timeline {
 public:
  Timeline(Graph& f, Graph& b) {
    int64_t t = 0;
    for (Node* n : f.nodes()) time_[n] = t++;
    time_[f.return_node()] = t++;
    for (Node* n : b.nodes()) time_[n] = t++;
    time_[b.return_node()] = t++;
  }
  int64_t at(Node* n) const { return time_.at(n); }
  // The last top-level node of v's graph that uses v (the producer when unused).
  int64_t lastUse(Value* v) const {
    Graph& g = *v->owningGraph();
    // A graph input is live from the graph's entry.
    int64_t last = v->node()->kind() == c10::prim::Param ? at(g.block()->nodes().front())
                                                         : at(topLevelNode(v->node(), g.block()));
    for (const auto& use : v->uses()) last = std::max(last, at(topLevelNode(use.user, g.block())));
    return last;
  }

 private:
  std::unordered_map<Node*, int64_t> time_;
};

class PlanMemory : public Pass {
 public:
  PlanMemory() { options_.declare("alignment", "64", "byte alignment of every slot (a power of two)"); }

  void checkOptions() const override {
    const int64_t alignment = options_.integer("alignment");
    if (alignment < 8 || (alignment & (alignment - 1)) != 0)
      throw CompileError("option alignment must be a power of two >= 8, got " + std::to_string(alignment));
  }

  bool run(TrainingIR& ir, Diagnostics& diag) override {
    if (!ir.forward || !ir.compression) {
      diag.error("nothing is packed yet; run insert-compression (and schedule-swap) first");
      return false;
    }
    if (ir.arena) {
      diag.error("the step's memory is planned already");
      return false;
    }
    const int64_t alignment = options_.integer("alignment");
    Graph& f = *ir.forward;
    Graph& b = *ir.backward;
    Timeline time(f, b);
    ArenaConfig config;
    config.alignment = alignment;
    std::vector<std::pair<Node*, int64_t>> producers;  // node, slot
    std::unordered_map<const Value*, int64_t> slot_of_saved;  // F output value -> F slot

    // F: the packed producers, in order.
    for (Node* n : f.nodes()) {
      const auto kind = n->kind();
      if (kind != actnnOp("compress") && kind != actnnOp("pack_mask") && kind != actnnOp("pack_pool_index")) continue;
      Value* out = n->output();
      int64_t last = time.lastUse(out);
      // Returned by F: alive until its last use in B.
      for (size_t i = 0; i < f.outputs().size(); ++i)
        if (f.outputs()[i] == out && i >= ir.num_outputs) last = std::max(last, time.lastUse(b.inputs()[i]));
      const int64_t slot = int64_t(config.slots.size());
      config.slots.push_back({std::string(kind.toUnqualString()) + " %" + out->debugName(), time.at(n), last, -1});
      producers.emplace_back(n, slot);
      // The value F saves in its place (itself, or what swap_out made of it).
      for (const auto& use : out->uses())
        if (use.user->kind() == actnnOp("swap_out")) slot_of_saved[use.user->output()] = slot;
      slot_of_saved[out] = slot;
    }
    if (producers.empty()) return false;
    // B: what swap_in brings back, alive until the last use of swap_wait's result.
    for (Node* n : b.nodes()) {
      if (n->kind() != actnnOp("swap_in")) continue;
      Value* in = n->input(0);
      int64_t source = -1;
      for (size_t i = ir.num_outputs; i < b.inputs().size(); ++i)
        if (b.inputs()[i] == in) {
          auto it = slot_of_saved.find(f.outputs()[i]);
          if (it != slot_of_saved.end()) source = it->second;
        }
      if (source < 0) {
        diag.error(n, "swap_in of a value F did not pack; the graphs do not come from insert-compression");
        return false;
      }
      int64_t last = time.lastUse(n->output());
      for (const auto& use : n->output()->uses())
        if (use.user->kind() == actnnOp("swap_wait") || use.user->kind() == actnnOp("swap_wait_tensor"))
          last = std::max(last, time.lastUse(use.user->output()));
      const int64_t slot = int64_t(config.slots.size());
      config.slots.push_back({"swap_in %" + n->output()->debugName(), time.at(n), last, source});
      producers.emplace_back(n, slot);
    }

    // F and B take the arena last; each producer gets it and its slot.
    Value* arena_f = f.addInput("actnn_arena");
    arena_f->setType(arenaType());
    Value* arena_b = b.addInput("actnn_arena");
    arena_b->setType(arenaType());
    for (auto& [n, slot] : producers) {
      Graph& g = *n->owningGraph();
      Value* arena = &g == &f ? arena_f : arena_b;
      std::vector<torch::jit::NamedValue> args(n->inputs().begin(), n->inputs().end());
      // The arguments before (arena, slot); defaulted ones after them go.
      const size_t keep = n->kind() == actnnOp("compress") ? 5 : n->kind() == actnnOp("pack_pool_index") ? 6 : 1;
      args.erase(args.begin() + keep, args.end());
      args.emplace_back(arena);
      args.emplace_back(slot);
      torch::jit::WithInsertPoint guard(n);
      Node* planned = insertOp(g, n->kind(), args, n->sourceRange());
      planned->output()->setType(n->output()->type());
      n->output()->replaceAllUsesWith(planned->output());
      if (n->output()->hasDebugName()) planned->output()->setDebugName(n->output()->debugName());
      n->destroy();
    }
    ir.arena = std::move(config);
    for (auto* g : {&ir.forward, &ir.backward}) torch::jit::ConstantPooling(*g);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> createPlanMemoryPass() { return std::make_unique<PlanMemory>(); }

}  // namespace actnn
