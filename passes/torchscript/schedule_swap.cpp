// schedule-swap (L4): keep the packed saved values off the device between
// forward and backward. In F each packed value (a quantized activation, a
// packed mask or pool index) goes to host memory right after it is made; in
// B it starts coming back `prefetch` fetches ahead of its first use and is
// waited for right before that use.
//
//   F:  %p = actnn::compress(%x, %state, 3, 1, %w)    %p = actnn::compress(%x, %state, 3, 1, %w)
//       return (%out, %p)                             %s = actnn::swap_out(%p)
//                                                     return (%out, %s)
//   B:  %x2 = actnn::dequantize(%p)                   %h = actnn::swap_in(%s)   # 2 fetches earlier
//                                                     ...
//                                                     %p2 = actnn::swap_wait(%h)
//                                                     %x2 = actnn::dequantize(%p2)
//
// Fetches are ordered by the B node that first uses them; with prefetch=k the
// swap_in of fetch j sits right before the swap_wait of fetch j-k (the first k
// start at B's entry), so at most k+1 values are in flight on the device.
// Left alone: full-precision saved values (parameters, inputs, statistics,
// anything insert-compression kept as it was) and packed values B never uses.
#include <algorithm>

#include <torch/csrc/jit/passes/constant_pooling.h>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/pass.h"

namespace actnn {
namespace {

using torch::jit::Node;
using torch::jit::Value;

bool isPackedActivation(const Value* v) {
  auto cls = v->type()->cast<c10::ClassType>();
  return cls && cls->name() && cls->name()->qualifiedName() == "__torch__.torch.classes.actnn.PackedActivation";
}

// What insert-compression packed: quantized activations, packed masks and
// pool indices.
bool isPacked(const Value* v) {
  if (isPackedActivation(v)) return true;
  const auto kind = v->node()->kind();
  return kind == actnnOp("pack_mask") || kind == actnnOp("pack_pool_index");
}

struct Fetch {
  Node* first_use;  // in B's top-level block
  size_t saved;     // index in the saved set
  Node* wait = nullptr;
};

class ScheduleSwap : public Pass {
 public:
  ScheduleSwap() {
    options_.declare("prefetch", "2", "how many fetches ahead of its first use a value starts coming back (>= 0)");
  }

  void checkOptions() const override {
    const int64_t prefetch = options_.integer("prefetch");
    if (prefetch < 0) throw CompileError("option prefetch must be >= 0, got " + std::to_string(prefetch));
  }

  bool run(TrainingIR& ir, Diagnostics& diag) override {
    if (!ir.forward || !ir.compression) {
      diag.error("nothing is packed yet; run insert-compression first");
      return false;
    }
    if (ir.arena) {
      diag.error("the step's memory is planned already; run schedule-swap before plan-memory");
      return false;
    }
    const int64_t prefetch = options_.integer("prefetch");
    auto& f = *ir.forward;
    auto& b = *ir.backward;
    for (Node* n : f.nodes())
      if (n->kind() == actnnOp("swap_out")) {
        diag.error(n, "the forward graph swaps already");
        return false;
      }

    std::vector<Fetch> fetches;
    for (size_t i = 0; i < ir.numSaved(); ++i) {
      Value* v = f.outputs()[ir.num_outputs + i];
      Value* in = b.inputs()[ir.num_outputs + i];
      if (!isPacked(v) || !in->hasUses()) continue;
      Node* first = nullptr;
      for (const auto& use : in->uses()) {
        Node* n = topLevelNode(use.user, b.block());
        if (!first || n->isBefore(first)) first = n;
      }
      fetches.push_back({first, i});
    }
    if (fetches.empty()) return false;

    for (auto& fetch : fetches) {
      Value* v = f.outputs()[ir.num_outputs + fetch.saved];
      Value* in = b.inputs()[ir.num_outputs + fetch.saved];
      const bool activation = isPackedActivation(v);
      // F: out right after the producer.
      Value* swapped;
      {
        torch::jit::WithInsertPoint guard(v->node()->next());
        swapped = insertValue(f, actnnOp("swap_out"), {v});
      }
      f.block()->replaceOutput(ir.num_outputs + fetch.saved, swapped);
      // B: wait right before the first use; B's input becomes the swapped value.
      const c10::TypePtr packed_type = in->type();
      in->setType(swapped->type());
      torch::jit::WithInsertPoint guard(fetch.first_use);
      fetch.wait = insertOp(b, actnnOp(activation ? "swap_wait" : "swap_wait_tensor"), {in});
      fetch.wait->output()->setType(packed_type);
      in->replaceAllUsesAfterNodeWith(fetch.wait, fetch.wait->output());
    }
    // Prefetch: fetch j starts before the wait of fetch j - prefetch.
    std::stable_sort(fetches.begin(), fetches.end(),
                     [](const Fetch& a, const Fetch& c) { return a.wait->isBefore(c.wait); });
    Node* entry = b.block()->nodes().front();
    for (size_t j = 0; j < fetches.size(); ++j) {
      Node* at = j < size_t(prefetch) ? entry : fetches[j - size_t(prefetch)].wait;
      Value* in = fetches[j].wait->input(0);
      torch::jit::WithInsertPoint guard(at);
      Value* back = insertValue(b, actnnOp("swap_in"), {in});
      fetches[j].wait->replaceInput(0, back);
    }
    torch::jit::ConstantPooling(ir.backward);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> createScheduleSwapPass() { return std::make_unique<ScheduleSwap>(); }

}  // namespace actnn
