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
//
// Run-time specialization: the module also records the pipeline that built
// it (_actnn_pipeline), its inputs' names, the signature it was specialized
// to ahead of time (_actnn_guard) and whether a call with another signature
// gets its own program (_actnn_specialize). The runtime keeps one program
// per signature and asks the compiler for a new one through the Specializer
// this file installs in every process that links it (runtime/training.h);
// where only the runtime is loaded, a specialized module refuses other
// sizes and a fallback-using one runs as compiled. A specialization's
// CompressionState and Arena live in the runtime's cache, not in the archive.
#include "actnn/actnn.h"
#include "actnn/runtime/archive_check.h"


#include <torch/csrc/jit/api/compilation_unit.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/serialization/import.h>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/registry.h"
#include "actnn/runtime/arena.h"
#include "actnn/runtime/compression.h"

namespace actnn {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

namespace {

// `pipeline` with specialize-shapes{shapes=...} after its first canonicalize
// (in-place ops made functional, one spelling per op; specialize-shapes runs
// canonicalize again over what it inlines), or after lower-module.
std::string withShapes(std::string pipeline, const std::string& shapes) {
  for (const std::string after : {"canonicalize", "lower-module"}) {
    size_t at = pipeline.find(after);
    if (at == std::string::npos) continue;
    at += after.size();
    if (at < pipeline.size() && pipeline[at] == '{') at = pipeline.find('}', at) + 1;
    return pipeline.insert(at, ",specialize-shapes{shapes=" + shapes + "}");
  }
  throw CompileError("pipeline '" + pipeline + "' does not lower a module, so it cannot be specialized to input sizes");
}

}  // namespace

std::string pipelineFor(const Options& options) {
  if (!options.passes.empty()) return options.passes;
  std::string pipeline = levelPipeline(options.level);
  if (!options.fallback) {
    const std::string autodiff = "autodiff";
    pipeline.insert(pipeline.find(autodiff) + autodiff.size(), "{fallback=false}");
  }
  if (options.input_shapes.empty()) return pipeline;
  std::string shapes;
  for (const auto& [name, sizes] : options.input_shapes) {
    auto dtype = options.input_dtypes.find(name);
    shapes += (shapes.empty() ? "" : ";") +
              shapeEntry(name, sizes, dtype == options.input_dtypes.end() ? c10::nullopt
                                                                          : c10::make_optional(dtype->second));
  }
  return withShapes(pipeline, shapes);
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
  for (const auto& s : config.sites) sites.emplace_back(s.name, s.bits, s.floor, s.dither, s.batch_norm, s.normalized);
  auto state = c10::make_intrusive<CompressionState>(config.budget_bits, config.group_size, std::move(sites));
  for (size_t i = 0; i < config.sites.size(); ++i) state->sites[i].triangular = config.sites[i].triangular;
  return c10::IValue(state);
}

ProgramSpec trainingProgram(const TrainingIR& ir, const c10::ClassTypePtr& self_type) {
  if (!ir.forward || !ir.backward) throw CompileError("the pipeline did not run autodiff; no training graphs to build");
  ProgramSpec p;
  p.forward = asMethod(ir.forward, self_type);
  p.backward = asMethod(ir.backward, self_type);
  for (const auto& in : ir.inputs) {
    if (in.role == InputRole::Input) continue;
    p.lifted.push_back(in.name);
    p.lifted_requires_grad.push_back(in.requires_grad);
  }
  for (size_t i : ir.grad_inputs) p.grad_inputs.push_back(static_cast<int64_t>(i));
  p.training_flags = ir.training_flags;
  p.num_outputs = static_cast<int64_t>(ir.num_outputs);
  p.fallback_ops = static_cast<int64_t>(ir.fallback_ops.size());
  p.branch_ops = static_cast<int64_t>(ir.branch_ops.size());
  if (ir.compression) p.state = makeCompressionState(*ir.compression);
  if (ir.arena) {
    std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>> slots;
    for (const auto& s : ir.arena->slots) slots.emplace_back(s.name, s.first, s.last, s.source);
    p.arena = c10::IValue(c10::make_intrusive<Arena>(ir.arena->alignment, std::move(slots)));
  }
  return p;
}

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

  const ProgramSpec program = trainingProgram(ir, type);
  addMethod(m, "_actnn_eval_forward", original->copy());
  addMethod(m, "_actnn_forward_graph", program.forward);
  addMethod(m, "_actnn_backward_graph", program.backward);
  std::vector<std::string> flags;
  for (const auto& f : program.training_flags) flags.push_back(f.first + "=" + (f.second ? "1" : "0"));
  setAttribute(m, "_actnn_lifted", c10::ListType::ofStrings(), c10::List<std::string>(program.lifted));
  c10::List<bool> lifted_rg;
  for (bool rg : program.lifted_requires_grad) lifted_rg.push_back(rg);
  setAttribute(m, "_actnn_lifted_requires_grad", c10::ListType::ofBools(), lifted_rg);
  setAttribute(m, "_actnn_grad_inputs", c10::ListType::ofInts(), c10::List<int64_t>(program.grad_inputs));
  setAttribute(m, "_actnn_num_outputs", c10::IntType::get(), program.num_outputs);
  setAttribute(m, "_actnn_training_flags", c10::ListType::ofStrings(), c10::List<std::string>(flags));
  if (!program.state.isNone())
    m.register_attribute("_actnn_state", c10::getCustomClassType<c10::intrusive_ptr<CompressionState>>(), program.state);
  if (!program.arena.isNone())
    m.register_attribute("_actnn_arena", c10::getCustomClassType<c10::intrusive_ptr<Arena>>(), program.arena);

  // Run-time specialization (runtime/training.cpp): the pipeline to run
  // again, the user inputs' names, the signature this program was
  // specialized to ("x:2x3x8x8:float32" per specialized input), and whether
  // a new signature gets its own program: when this one is specialized (a
  // call with other sizes needs one) or keeps control flow (nodes under the
  // autograd fallback, branches differentiated per branch) that may depend
  // only on sizes, which specializing folds into rules.
  std::vector<std::string> input_names;
  for (const auto& in : ir.inputs)
    if (in.role == InputRole::Input) input_names.push_back(in.name);
  std::vector<std::string> guard;
  for (const auto& s : ir.specialized) guard.push_back(shapeEntry(s.name, s.sizes, s.dtype));
  const bool respecializes = ir.module && !ir.pipeline.empty() && ir.pipeline.find("lower-module") == 0;
  setAttribute(m, "_actnn_specialize", c10::BoolType::get(),
               respecializes && (!guard.empty() || program.fallback_ops > 0 || program.branch_ops > 0));
  setAttribute(m, "_actnn_pipeline", c10::StringType::get(), ir.pipeline);
  setAttribute(m, "_actnn_inputs", c10::ListType::ofStrings(), c10::List<std::string>(input_names));
  setAttribute(m, "_actnn_guard", c10::ListType::ofStrings(), c10::List<std::string>(guard));
  setAttribute(m, "_actnn_fallback_ops", c10::IntType::get(), program.fallback_ops);
  setAttribute(m, "_actnn_branch_ops", c10::IntType::get(), program.branch_ops);

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

namespace {

// The runtime's Specializer: the compiled module's original forward
// (_actnn_eval_forward), through the pipeline that compiled it, specialized
// to the call's sizes and dtypes. F and B become methods of nothing: the
// runtime runs them with the module as `self`, which they do not read.
ProgramSpec specializeCompiled(const c10::intrusive_ptr<c10::ivalue::Object>& self,
                               const std::vector<at::Tensor>& inputs) {
  torch::jit::Module module(self);
  std::vector<std::string> names;
  for (const auto& n : self->getAttr("_actnn_inputs").toListRef()) names.push_back(n.toStringRef());
  TrainingIR ir = TrainingIR::fromModule(module, "_actnn_eval_forward");
  runPipelineText(withShapes(self->getAttr("_actnn_pipeline").toStringRef(), signatureText(names, inputs)), ir);
  return trainingProgram(ir, module.type());
}

const bool kSpecializerInstalled = [] {
  setSpecializer(&specializeCompiled);
  return true;
}();

}  // namespace

torch::jit::Module load(const std::string& path) {
  TORCH_INTERNAL_ASSERT(kSpecializerInstalled);
  checkArchive(path);
  return torch::jit::load(path);
}

}  // namespace actnn
