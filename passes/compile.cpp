// actnn::compile and the module it builds.
//
// The compiled module is a clone of the original (new class type, same
// tensors) whose forward becomes
//
//   def forward(self, x):
//       if self.training:
//           return <rebuild result>(ops.actnn.run_training(self, [x]))
//       return self._actnn_eval_forward(x)   # the original forward
//
// and which also carries F and B as methods (_actnn_forward_graph,
// _actnn_backward_graph, each taking self first and returning a tuple) and
// the metadata run_training needs as attributes (_actnn_lifted: the state_dict
// keys of the tensors after the user inputs, _actnn_grad_inputs,
// _actnn_num_outputs, _actnn_training_flags) and, when the saved set is
// compressed, the CompressionState F and B take last (_actnn_state). Everything is ordinary
// TorchScript, so .save() writes a normal archive that loads wherever
// libactnn_runtime.so is loaded.
#include "actnn/actnn.h"


#include <torch/csrc/jit/api/compilation_unit.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/registry.h"
#include "actnn/runtime/arena.h"
#include "actnn/runtime/compression.h"

namespace actnn {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

std::string pipelineFor(const Options& options) {
  if (!options.passes.empty()) return options.passes;
  std::string pipeline = levelPipeline(options.level);
  if (!options.fallback) {
    const std::string autodiff = "autodiff";
    pipeline.insert(pipeline.find(autodiff) + autodiff.size(), "{fallback=false}");
  }
  if (options.input_shapes.empty()) return pipeline;
  // After canonicalize (in-place ops functional, one spelling per op);
  // specialize-shapes runs canonicalize again over what it inlines.
  std::string shapes;
  for (const auto& [name, sizes] : options.input_shapes) {
    shapes += (shapes.empty() ? "" : ";") + name + ":";
    for (size_t i = 0; i < sizes.size(); ++i) shapes += (i ? "x" : "") + std::to_string(sizes[i]);
  }
  const std::string first = "canonicalize";
  const size_t at = pipeline.find(first);
  if (at == std::string::npos) return pipeline;
  return pipeline.insert(at + first.size(), ",specialize-shapes{shapes=" + shapes + "}");
}

void runPipelineText(const std::string& pipeline, TrainingIR& ir) {
  auto steps = parsePipeline(pipeline);
  runPipeline(steps, ir);
}

namespace {

void addMethod(torch::jit::Module& m, const std::string& name, std::shared_ptr<Graph> graph) {
  auto cu = m._ivalue()->compilation_unit();
  c10::QualifiedName qualified(*m.type()->name(), name);
  auto* fn = cu->create_function(qualified, std::move(graph));
  m.type()->addMethod(fn);
}

// A method graph: `self` first, the outputs packed in one tuple.
std::shared_ptr<Graph> asMethod(const std::shared_ptr<Graph>& g, const c10::ClassTypePtr& self_type) {
  auto graph = g->copy();
  for (Value* in : graph->inputs())
    if (in->hasDebugName()) in->setDebugName(identifier(in->debugName()));
  graph->insertInput(0, "self")->setType(self_type);
  std::vector<Value*> outs(graph->outputs().begin(), graph->outputs().end());
  while (!graph->outputs().empty()) graph->eraseOutput(0);
  Node* tuple = graph->insertNode(graph->createTuple(outs));
  graph->registerOutput(tuple->output());
  return graph;
}

template <typename T>
void setAttribute(torch::jit::Module& m, const std::string& name, const c10::TypePtr& type, T value) {
  m.register_attribute(name, type, c10::IValue(std::move(value)));
}

}  // namespace

c10::IValue makeCompressionState(const CompressionConfig& config) {
  std::vector<CompressionState::SiteConfig> sites;
  for (const auto& s : config.sites) sites.emplace_back(s.name, s.bits, s.floor, s.dither);
  return c10::IValue(c10::make_intrusive<CompressionState>(config.budget_bits, config.group_size, std::move(sites)));
}

namespace {

// Raises when a call's input is not what the program was specialized to.
const char* kGuard = R"TS(
def check_input(x: Tensor, sizes: List[int], dtype: int, name: str):
    assert x.size() == sizes and x.dtype == dtype, ("actnn: forward input '" + name + "' has sizes " +
        str(x.size()) + " and dtype code " + str(x.dtype) + "; this module was compiled for sizes " + str(sizes) +
        " and dtype code " + str(dtype) + " (specialize-shapes): compile it again for these sizes")
)TS";

}  // namespace

torch::jit::Module buildTrainingModule(const TrainingIR& ir) {
  TORCH_CHECK(ir.module, "buildTrainingModule needs the source module");
  if (!ir.forward || !ir.backward) throw CompileError("the pipeline did not run autodiff; no training graphs to build");
  for (size_t i = 0; i < ir.inputs.size(); ++i)
    if (ir.inputs[i].role == InputRole::Input && !ir.graph->inputs()[i]->type()->isSubtypeOf(*c10::TensorType::get()))
      throw CompileError("forward input '" + ir.inputs[i].name + "' has type " +
                         ir.graph->inputs()[i]->type()->repr_str() + "; compiled modules take tensors only");

  torch::jit::Module m = ir.module->clone(/*inplace=*/true);
  auto type = m.type();
  auto cu = m._ivalue()->compilation_unit();
  auto original = torch::jit::toGraphFunction(m.get_method("forward").function()).graph();

  addMethod(m, "_actnn_eval_forward", original->copy());
  addMethod(m, "_actnn_forward_graph", asMethod(ir.forward, type));
  addMethod(m, "_actnn_backward_graph", asMethod(ir.backward, type));

  c10::List<std::string> lifted;
  c10::List<bool> lifted_rg;
  size_t num_user = 0;
  for (const auto& in : ir.inputs) {
    if (in.role == InputRole::Input) {
      ++num_user;
      continue;
    }
    lifted.push_back(in.name);
    lifted_rg.push_back(in.requires_grad);
  }
  c10::List<int64_t> grad_inputs;
  for (size_t i : ir.grad_inputs) grad_inputs.push_back(static_cast<int64_t>(i));
  c10::List<std::string> flags;
  for (const auto& f : ir.training_flags) flags.push_back(f.first + "=" + (f.second ? "1" : "0"));
  setAttribute(m, "_actnn_lifted", c10::ListType::ofStrings(), lifted);
  setAttribute(m, "_actnn_lifted_requires_grad", c10::ListType::ofBools(), lifted_rg);
  setAttribute(m, "_actnn_grad_inputs", c10::ListType::ofInts(), grad_inputs);
  setAttribute(m, "_actnn_num_outputs", c10::IntType::get(), static_cast<int64_t>(ir.num_outputs));
  setAttribute(m, "_actnn_training_flags", c10::ListType::ofStrings(), flags);
  if (ir.compression)
    m.register_attribute("_actnn_state", c10::getCustomClassType<c10::intrusive_ptr<CompressionState>>(),
                         makeCompressionState(*ir.compression));
  if (ir.arena) {
    std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>> slots;
    for (const auto& s : ir.arena->slots) slots.emplace_back(s.name, s.first, s.last, s.source);
    m.register_attribute("_actnn_arena", c10::getCustomClassType<c10::intrusive_ptr<Arena>>(),
                         c10::IValue(c10::make_intrusive<Arena>(ir.arena->alignment, std::move(slots))));
  }

  // The new forward.
  auto graph = std::make_shared<Graph>();
  Value* self = graph->addInput("self");
  self->setType(type);
  std::vector<Value*> args{self};
  for (size_t i = 1; i < original->inputs().size(); ++i) {
    Value* in = graph->addInput(original->inputs()[i]->debugName());
    in->setType(original->inputs()[i]->type());
    args.push_back(in);
  }
  Node* training = graph->insertNode(graph->createGetAttr(self, "training"));
  Node* branch = graph->insertNode(graph->create(c10::prim::If, {training->output()}, 1));
  branch->output()->setType(original->outputs()[0]->type());
  {
    auto* block = branch->addBlock();
    torch::jit::WithInsertPoint guard(block);
    std::vector<Value*> user(args.begin() + 1, args.end());
    for (const auto& s : ir.specialized) {
      size_t i = 0;
      while (i < ir.inputs.size() && !(ir.inputs[i].role == InputRole::Input && ir.inputs[i].name == s.name)) ++i;
      TORCH_INTERNAL_ASSERT(i < user.size(), "specialized input '", s.name, "' is not a forward input");
      torch::jit::insertGraph(*graph, *scriptHelperGraph(kGuard, "check_input"),
                              {user[i], graph->insertConstant(s.sizes), graph->insertConstant(int64_t(s.dtype)),
                               graph->insertConstant(s.name)});
    }
    Node* list = graph->insertNode(graph->createList(c10::TensorType::get(), user));
    Value* outs = graph->insert(c10::Symbol::fromQualString("actnn::run_training"), {self, list->output()});
    Node* unpack = graph->insertNode(graph->create(c10::prim::ListUnpack, {outs}, ir.num_outputs));
    for (Value* o : unpack->outputs()) o->setType(c10::TensorType::get());
    auto rebuilt = torch::jit::insertGraph(*graph, *ir.output_builder,
                                           std::vector<Value*>(unpack->outputs().begin(), unpack->outputs().end()));
    block->registerOutput(rebuilt.at(0));
  }
  {
    auto* block = branch->addBlock();
    torch::jit::WithInsertPoint guard(block);
    Node* call = graph->insertNode(graph->create(c10::prim::CallMethod, args, 1));
    call->s_(c10::attr::name, "_actnn_eval_forward");
    call->output()->setType(original->outputs()[0]->type());
    block->registerOutput(call->output());
  }
  graph->registerOutput(branch->output());

  type->unsafeRemoveMethod("forward");
  cu->unsafeRemoveMethod(c10::QualifiedName(*type->name(), "forward"));
  addMethod(m, "forward", graph);
  return m;
}

torch::jit::Module compile(const torch::jit::Module& module, const Options& options) {
  TrainingIR ir = TrainingIR::fromModule(module);
  runPipelineText(pipelineFor(options), ir);
  return buildTrainingModule(ir);
}

}  // namespace actnn
