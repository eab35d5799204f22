#include "specialize_backward.h"

#include <algorithm>

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

namespace actnn {

using torch::jit::Node;
using torch::jit::Value;

namespace {

// Clears output_mask entries whose gradient output has no use. Returns true
// if a mask changed.
bool narrowOutputMasks(torch::jit::Block* block) {
  bool changed = false;
  for (Node* n : block->nodes()) {
    for (auto* b : n->blocks()) changed |= narrowOutputMasks(b);
    const auto* schema = n->maybeSchema();
    if (!schema) continue;
    // Anywhere in the schema: our ops (actnn::batch_norm_backward,
    // actnn::convolution_backward) take more arguments after it.
    const auto& args = schema->arguments();
    const auto mask_at = std::find_if(args.begin(), args.end(), [](const auto& a) { return a.name() == "output_mask"; });
    const size_t index = size_t(mask_at - args.begin());
    if (mask_at == args.end() || index >= n->inputs().size()) continue;
    Value* mask_value = n->input(index);
    auto mask = torch::jit::toIValue(mask_value);
    if (!mask || !mask->isBoolList()) continue;
    c10::List<bool> bits = mask->toBoolList().copy();
    bool narrowed = false;
    for (size_t i = 0; i < bits.size() && i < n->outputs().size(); ++i) {
      if (bits[i] && !n->output(i)->hasUses()) {
        bits[i] = false;
        narrowed = true;
      }
    }
    if (!narrowed) continue;
    torch::jit::WithInsertPoint guard(n);
    n->replaceInput(index, n->owningGraph()->insertConstant(c10::IValue(bits)));
    changed = true;
  }
  return changed;
}

}  // namespace

std::shared_ptr<torch::jit::Graph> specializeBackward(const std::shared_ptr<torch::jit::Graph>& backward,
                                                      const std::vector<bool>& needed) {
  auto graph = backward->copy();
  Node* tuple = graph->outputs()[0]->node();
  TORCH_INTERNAL_ASSERT(tuple->kind() == c10::prim::TupleConstruct && tuple->inputs().size() == needed.size(),
                        "backward graph does not return its gradients as a tuple");
  for (size_t i = 0; i < needed.size(); ++i) {
    if (needed[i]) continue;
    torch::jit::WithInsertPoint guard(tuple);
    Value* none = graph->insertConstant(c10::IValue());
    tuple->replaceInput(i, none);
  }
  tuple->output()->setType(c10::TupleType::create(
      c10::fmap(tuple->inputs(), [](Value* v) { return v->type(); })));
  graph->outputs()[0]->setType(tuple->output()->type());
  torch::jit::EliminateDeadCode(graph);
  while (narrowOutputMasks(graph->block())) torch::jit::EliminateDeadCode(graph);
  return graph;
}

}  // namespace actnn
