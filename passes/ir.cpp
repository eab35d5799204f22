#include "actnn/passes/ir.h"

#include "actnn/passes/pass.h"

namespace actnn {

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
