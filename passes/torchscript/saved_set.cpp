// saved-set: classify every value the forward graph F saves for the backward
// graph B (F's outputs after the program's own), so that insert-compression
// knows how each may be stored. An analysis: F and B are not changed.
//
//   F: return (%out, %conv_w, %x1, %mean, %invstd, %mask, %idx, %sizes)
//   saved-set:      held   activation  statistic ×2  mask pool-index meta
//
// Kinds (SavedKind): held — a graph input (user input, parameter, buffer), a
// result of the program, or a view of either, which its owner keeps alive
// anyway, so storing it costs nothing; meta — not a tensor; statistic — batch/layer/group-norm mean and
// inverse std, nll_loss's total weight (per channel, kept); mask — boolean
// tensors (comparisons, dropout's keep mask); pool-index — the argmax offsets
// of max pooling; activation — any other tensor made by an op that yields
// floats from floats; other — integer-valued ops (argmax, ...), kept;
// fallback — the autograd graph of an op with no rule (autodiff's fallback),
// holding whatever that op's backward saves, uncompressed; branch — made
// inside a data-dependent branch, so None on steps where the other branch
// ran: kept as it is (a quantized slot whose size depends on data would
// break the L3 allocator's per-site statistics and L5's static plan).
// A value is saved once however many rules read it (autodiff dedupes); its
// name lists every reader. Left alone: values that alias each other through
// views are classified separately (each is stored).
#include <set>
#include <unordered_set>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/pass.h"

namespace actnn {
namespace {

using torch::jit::Node;
using torch::jit::Value;

bool isTensor(const Value* v) { return v->type()->isSubtypeOf(*c10::TensorType::get()); }

// `outputs`: the program's own results, which the caller holds anyway.
SavedKind classify(Value* v, const std::unordered_set<const Value*>& outputs) {
  if (v->node()->kind() == c10::Symbol::fromQualString("actnn::fallback_end")) return SavedKind::Fallback;
  if (v->node()->kind() == c10::prim::If && v->type()->isSubtypeOf(*c10::OptionalType::ofTensor()) &&
      !isTensor(v))
    return SavedKind::Branch;
  if (!isTensor(v)) return SavedKind::Meta;
  const auto family = viewFamily(v);
  if (family.front()->node()->kind() == c10::prim::Param) return SavedKind::Held;
  for (const Value* member : family)
    if (outputs.count(member)) return SavedKind::Held;
  const Node* n = v->node();
  const std::string kind = n->kind().toQualString();
  const size_t out = v->offset();
  static const std::set<std::string> statistics = {"aten::native_batch_norm", "aten::native_layer_norm",
                                                   "aten::native_group_norm", "aten::nll_loss_forward"};
  if (statistics.count(kind) && out > 0) return SavedKind::Statistic;
  if ((kind == "aten::max_pool2d_with_indices" || kind == "aten::max_pool3d_with_indices") && out == 1)
    return SavedKind::PoolIndex;
  if (kind == "aten::native_dropout" && out == 1) return SavedKind::Mask;
  // (values, indices) results: the indices are integers.
  static const std::set<std::string> with_indices = {
      "aten::adaptive_max_pool2d", "aten::adaptive_max_pool3d", "aten::max", "aten::min", "aten::sort",
      "aten::topk", "aten::kthvalue", "aten::mode", "aten::cummax", "aten::cummin", "aten::median"};
  if (with_indices.count(kind) && out == 1) return SavedKind::Other;
  static const std::set<std::string> masks = {
      "aten::eq", "aten::ne", "aten::lt", "aten::le", "aten::gt", "aten::ge", "aten::logical_and",
      "aten::logical_or", "aten::logical_not", "aten::logical_xor", "aten::isnan", "aten::isinf",
      "aten::isfinite"};
  if (masks.count(kind)) return SavedKind::Mask;
  static const std::set<std::string> integers = {"aten::argmax", "aten::argmin", "aten::randint",
                                                 "aten::arange", "aten::nonzero", "aten::sort",
                                                 "aten::topk", "prim::Constant"};
  if (integers.count(kind)) return SavedKind::Other;
  return SavedKind::Activation;
}

std::string describe(Value* v, const std::vector<SavedUse>& uses) {
  if (v->node()->kind() == c10::Symbol::fromQualString("actnn::fallback_end")) {
    // "autograd graph of aten::einsum at model.py:12:8" (autodiff names it)
    return "autograd graph of " + torch::jit::toIValue(v->node()->input(1))->toStringRef();
  }
  std::string name = std::string(v->node()->kind().toQualString()) + " %" + v->debugName();
  std::set<std::string> readers;
  for (const auto& u : uses) readers.insert(u.consumer->kind().toQualString());
  std::string list;
  for (const auto& r : readers) list += (list.empty() ? "" : ", ") + r;
  return list.empty() ? name : name + " -> " + list;
}

class SavedSet : public Pass {
 public:
  bool run(TrainingIR& ir, Diagnostics& diag) override {
    if (!ir.forward) {
      diag.error("the pipeline has no training graphs yet; run autodiff first");
      return false;
    }
    const size_t n = ir.numSaved();
    TORCH_INTERNAL_ASSERT(ir.saved_uses.size() == n, "autodiff recorded ", ir.saved_uses.size(),
                          " saved uses for ", n, " saved values");
    ir.saved.assign(n, SavedValue{});
    std::unordered_set<const Value*> outputs(ir.forward->outputs().begin(),
                                             ir.forward->outputs().begin() + ir.num_outputs);
    for (size_t i = 0; i < n; ++i) {
      Value* v = ir.forward->outputs()[ir.num_outputs + i];
      SavedValue& s = ir.saved[i];
      s.kind = classify(v, outputs);
      s.name = describe(v, ir.saved_uses[i]);
    }
    return false;
  }
};

}  // namespace

std::unique_ptr<Pass> createSavedSetPass() { return std::make_unique<SavedSet>(); }

}  // namespace actnn
