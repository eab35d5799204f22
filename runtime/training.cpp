// actnn::run_training: runs a compiled module's forward graph F and backward
// graph B as one autograd function.
//
// The compiled module (see passes/compile.cpp) carries F and B as methods
// (_actnn_forward_graph, _actnn_backward_graph) and the names of the
// parameters and buffers F takes after the user inputs. This op fetches
// those tensors from the module, runs F with the TorchScript interpreter
// (so every value dies at its last use), keeps F's saved values in the
// autograd context, and runs B when autograd asks for gradients. B is
// specialized once per pattern of needed gradients (specialize_backward.h).
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/runtime/interpreter.h>
#include <torch/library.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <unordered_map>

#include "actnn/runtime/arena.h"
#include "actnn/runtime/compression.h"
#include "actnn/runtime/training.h"
#include "specialize_backward.h"

namespace actnn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Program : torch::CustomClassHolder {
  std::shared_ptr<torch::jit::Graph> backward_graph;
  std::unique_ptr<torch::jit::Code> forward;
  std::vector<std::string> lifted;  // attribute paths of the tensors after the user inputs
  std::vector<bool> lifted_requires_grad;
  std::vector<int64_t> grad_inputs;  // B's outputs: gradients of these F inputs
  std::vector<std::pair<std::string, bool>> training_flags;
  int64_t num_outputs = 0;
  int64_t fallback_ops = 0, branch_ops = 0;
  bool compressed = false;  // F and B take a CompressionState last
  bool planned = false;     // ... and after it an Arena (L5)
  // A specialization holds its own state and arena; the module's program
  // reads the module's attributes (saved with it).
  bool owns_state = false;
  c10::IValue state, arena;
  std::mutex mutex;
  std::map<std::vector<bool>, std::shared_ptr<torch::jit::Code>> backward;  // by needed outputs

  explicit Program(const ProgramSpec& spec)
      : backward_graph(spec.backward),
        forward(std::make_unique<torch::jit::Code>(spec.forward->copy(), "actnn_forward")),
        lifted(spec.lifted),
        lifted_requires_grad(spec.lifted_requires_grad),
        grad_inputs(spec.grad_inputs),
        training_flags(spec.training_flags),
        num_outputs(spec.num_outputs),
        fallback_ops(spec.fallback_ops),
        branch_ops(spec.branch_ops),
        compressed(!spec.state.isNone()),
        planned(!spec.arena.isNone()),
        state(spec.state),
        arena(spec.arena) {}

  std::shared_ptr<torch::jit::Code> backwardFor(const std::vector<bool>& needed) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = backward.find(needed);
    if (it != backward.end()) return it->second;
    auto graph = specializeBackward(backward_graph, needed);
    auto code = std::make_shared<torch::jit::Code>(graph, "actnn_backward");
    backward.emplace(needed, code);
    return code;
  }

  c10::IValue stateOf(const c10::intrusive_ptr<c10::ivalue::Object>& self) const {
    if (!compressed) return c10::IValue();
    return owns_state ? state : self->getAttr("_actnn_state");
  }
  c10::IValue arenaOf(const c10::intrusive_ptr<c10::ivalue::Object>& self) const {
    if (!planned) return c10::IValue();
    return owns_state ? arena : self->getAttr("_actnn_arena");
  }
};

std::mutex specializer_mutex;
Specializer& installedSpecializer() {
  static Specializer specializer;
  return specializer;
}

// A compiled module's own program and, when it specializes at run time, one
// program per input signature (guarded by the call's sizes and dtypes).
struct ModulePrograms {
  c10::intrusive_ptr<Program> own;
  std::vector<std::string> input_names;
  // The inputs the own program was specialized to ahead of time, each
  // "x:2x3x8x8:float32"; a call that differs gets its own specialization.
  std::vector<std::string> guard;
  // The own program keeps control flow that may depend only on sizes (under
  // the autograd fallback, or differentiated per branch): with the compiler
  // loaded, every signature gets its own.
  bool specializes = false;
  std::mutex mutex;
  std::map<std::string, c10::intrusive_ptr<Program>> by_signature;
  std::vector<Specialization> built;  // in the order compiled
  bool warned = false;

  bool guardHolds(const std::vector<std::string>& entries) const {
    for (const auto& g : guard)
      if (std::find(entries.begin(), entries.end(), g) == entries.end()) return false;
    return true;
  }

  c10::intrusive_ptr<Program> select(const c10::intrusive_ptr<c10::ivalue::Object>& self,
                                     const std::vector<at::Tensor>& inputs) {
    if (!specializes) return own;
    TORCH_CHECK(inputs.size() == input_names.size(), "actnn: the compiled module takes ", input_names.size(),
                " inputs, got ", inputs.size());
    std::vector<std::string> entries;
    for (size_t i = 0; i < inputs.size(); ++i)
      entries.push_back(shapeEntry(input_names[i], inputs[i].sizes(), inputs[i].scalar_type()));
    if (!guard.empty() && guardHolds(entries)) return own;
    std::string signature;
    for (const auto& e : entries) signature += (signature.empty() ? "" : ";") + e;

    std::lock_guard<std::mutex> lock(mutex);
    auto it = by_signature.find(signature);
    if (it != by_signature.end()) return it->second;
    Specializer specializer;
    {
      std::lock_guard<std::mutex> hook_lock(specializer_mutex);
      specializer = installedSpecializer();
    }
    if (!specializer) {
      if (!guard.empty()) {
        std::string mismatch;
        for (const auto& g : guard)
          if (std::find(entries.begin(), entries.end(), g) == entries.end()) mismatch += (mismatch.empty() ? "" : ", ") + g;
        TORCH_CHECK(false, "actnn: this module was specialized to ", mismatch, " (specialize-shapes) and is called with ",
                    signature, "; the actnn compiler, which would specialize it again, is not loaded in this process "
                    "(link actnn_passes and load with actnn::load, or load libactnn.so in Python), or compile it "
                    "again for these sizes");
      }
      if (!warned) {
        TORCH_WARN("actnn: this module keeps control flow (", own->fallback_ops,
                   " node(s) under the autograd fallback, ", own->branch_ops,
                   " branch(es) differentiated per branch) that a specialization per input signature would fold "
                   "where it depends only on sizes; the actnn compiler is not loaded in this process (link "
                   "actnn_passes and load with actnn::load, or load libactnn.so in Python), so it trains as "
                   "compiled");
        warned = true;
      }
      by_signature.emplace(signature, own);
      return own;
    }
    ProgramSpec spec;
    try {
      spec = specializer(self, inputs);
    } catch (const std::exception& e) {
      const std::string why = e.what();
      // With a guard there is nothing else to run; without one the module's
      // own program (branches, fallback) is correct for any size.
      TORCH_CHECK(guard.empty(), "actnn: specializing the module to ", signature, " failed: ", why);
      TORCH_WARN("actnn: specializing the module to ", signature, " failed, so it runs as compiled: ", why);
      by_signature.emplace(signature, own);
      built.push_back({signature, own->fallback_ops, own->branch_ops});
      return own;
    }
    TORCH_CHECK(spec.num_outputs == own->num_outputs, "actnn: the specialization to ", signature, " has ",
                spec.num_outputs, " outputs, the compiled module ", own->num_outputs);
    auto program = c10::make_intrusive<Program>(spec);
    program->owns_state = true;
    by_signature.emplace(signature, program);
    built.push_back({signature, program->fallback_ops, program->branch_ops});
    return program;
  }
};

std::shared_ptr<torch::jit::Graph> methodGraph(const c10::ClassTypePtr& type, const std::string& name) {
  auto* fn = type->findMethod(name);
  TORCH_CHECK(fn, "actnn: ", type->repr_str(), " has no method ", name,
              "; it was not produced by actnn::compile");
  return torch::jit::toGraphFunction(*fn).graph();
}

std::vector<std::string> stringList(const c10::IValue& v) {
  std::vector<std::string> out;
  for (const auto& s : v.toListRef()) out.push_back(s.toStringRef());
  return out;
}

std::shared_ptr<ModulePrograms> loadPrograms(const c10::intrusive_ptr<c10::ivalue::Object>& self) {
  const auto& type = self->type();
  ProgramSpec spec;
  spec.forward = methodGraph(type, "_actnn_forward_graph");
  spec.backward = methodGraph(type, "_actnn_backward_graph");
  spec.lifted = stringList(self->getAttr("_actnn_lifted"));
  for (const auto& b : self->getAttr("_actnn_lifted_requires_grad").toListRef())
    spec.lifted_requires_grad.push_back(b.toBool());
  for (const auto& i : self->getAttr("_actnn_grad_inputs").toListRef()) spec.grad_inputs.push_back(i.toInt());
  for (const auto& entry : stringList(self->getAttr("_actnn_training_flags"))) {  // "path=0|1"
    auto eq = entry.rfind('=');
    spec.training_flags.emplace_back(entry.substr(0, eq), entry.substr(eq + 1) == "1");
  }
  spec.num_outputs = self->getAttr("_actnn_num_outputs").toInt();
  // Read per call from the module (see Program::stateOf); here only whether.
  if (type->hasAttribute("_actnn_state")) spec.state = self->getAttr("_actnn_state");
  if (type->hasAttribute("_actnn_arena")) spec.arena = self->getAttr("_actnn_arena");
  // Archives compiled before run-time specialization have none of these.
  if (type->hasAttribute("_actnn_fallback_ops")) spec.fallback_ops = self->getAttr("_actnn_fallback_ops").toInt();
  if (type->hasAttribute("_actnn_branch_ops")) spec.branch_ops = self->getAttr("_actnn_branch_ops").toInt();
  auto programs = std::make_shared<ModulePrograms>();
  programs->own = c10::make_intrusive<Program>(spec);
  if (type->hasAttribute("_actnn_specialize")) {
    programs->specializes = self->getAttr("_actnn_specialize").toBool();
    programs->input_names = stringList(self->getAttr("_actnn_inputs"));
    programs->guard = stringList(self->getAttr("_actnn_guard"));
  }
  return programs;
}

// One ModulePrograms per compiled class type, built on first use. The
// programs' graphs take the class as their `self` input, so they keep the
// ClassType alive themselves; an entry goes once the compilation unit that
// defines the class is gone (every module of that unit dropped), so a
// process that compiles and drops many modules does not grow.
std::shared_ptr<ModulePrograms> programsFor(const c10::intrusive_ptr<c10::ivalue::Object>& self) {
  struct Entry {
    std::weak_ptr<c10::ClassType> type;
    std::weak_ptr<torch::jit::CompilationUnit> unit;
    std::shared_ptr<ModulePrograms> programs;
  };
  static std::mutex mutex;
  static std::unordered_map<const c10::ClassType*, Entry> cache;
  std::lock_guard<std::mutex> lock(mutex);
  const auto& type = self->type();
  auto it = cache.find(type.get());
  if (it != cache.end() && it->second.type.lock() == type) return it->second.programs;
  auto programs = loadPrograms(self);
  for (auto stale = cache.begin(); stale != cache.end();)
    stale = stale->second.unit.expired() ? cache.erase(stale) : std::next(stale);
  cache[type.get()] = {type, self->compilation_unit(), programs};
  return programs;
}

// A step whose F or B threw: the compression state drops what the step began
// (CompressionState::abandonStep) and the step's arena releases its buffer.
void abandonStep(const c10::intrusive_ptr<Program>& program, const c10::IValue& state, const c10::IValue& arena,
                 int64_t step) {
  if (program->compressed) state.toCustomClass<CompressionState>()->abandonStep(step);
  if (program->planned && arena.isCustomClass()) arena.toCustomClass<Arena>()->endStep();
}

struct TrainingFunction : torch::autograd::Function<TrainingFunction> {
  static variable_list forward(AutogradContext* ctx, c10::IValue program_value, c10::IValue self,
                               c10::IValue state, c10::IValue arena, int64_t step, at::TensorList inputs,
                               at::TensorList lifted) {
    auto program = c10::static_intrusive_pointer_cast<Program>(program_value.toCapsule());
    ctx->saved_data["step"] = step;
    torch::jit::Stack stack;
    stack.reserve(2 + inputs.size() + lifted.size());
    stack.emplace_back(self);
    for (const auto& t : inputs) stack.emplace_back(t);
    for (const auto& t : lifted) stack.emplace_back(t);
    if (program->compressed) stack.emplace_back(state);
    if (program->planned) stack.emplace_back(arena);
    torch::jit::InterpreterState(*program->forward).run(stack);
    auto results = stack.back().toTupleRef().elements().vec();
    stack.clear();

    variable_list outputs;
    for (int64_t i = 0; i < program->num_outputs; ++i) outputs.push_back(results[i].toTensor());
    // Saved tensors go through save_for_backward (version checks, no cycles
    // through outputs); everything else stays an IValue.
    variable_list saved_tensors;
    c10::impl::GenericList saved(c10::AnyType::get());
    for (size_t i = program->num_outputs; i < results.size(); ++i) {
      if (results[i].isTensor()) {
        saved_tensors.push_back(results[i].toTensor());
        saved.push_back(c10::IValue());
      } else {
        saved.push_back(results[i]);
      }
    }
    std::vector<bool> is_tensor;
    for (size_t i = program->num_outputs; i < results.size(); ++i) is_tensor.push_back(results[i].isTensor());
    ctx->save_for_backward(saved_tensors);
    ctx->saved_data["program"] = program_value;
    ctx->saved_data["self"] = self;
    ctx->saved_data["state"] = state;
    ctx->saved_data["arena"] = arena;
    ctx->saved_data["saved"] = saved;
    c10::List<bool> flags;
    for (bool b : is_tensor) flags.push_back(b);
    ctx->saved_data["is_tensor"] = flags;
    ctx->saved_data["num_inputs"] = static_cast<int64_t>(inputs.size() + lifted.size());
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto program = c10::static_intrusive_pointer_cast<Program>(ctx->saved_data["program"].toCapsule());
    const int64_t num_inputs = ctx->saved_data["num_inputs"].toInt();
    // Autograd numbers only the tensor arguments (inputs, then lifted).
    std::vector<bool> needed;
    for (int64_t i : program->grad_inputs) needed.push_back(ctx->needs_input_grad(i));
    auto code = program->backwardFor(needed);

    TORCH_CHECK(ctx->saved_data.find("saved") != ctx->saved_data.end(),
                "actnn: a compressed module's backward runs once per forward (its packed activations are freed "
                "as backward uses them); retain_graph=True is not supported at L1-L5");
    auto tensors = ctx->get_saved_variables();
    auto saved = ctx->saved_data["saved"].toList();
    auto is_tensor = ctx->saved_data["is_tensor"].toBoolList();
    torch::jit::Stack stack;
    stack.emplace_back(ctx->saved_data["self"]);
    for (auto& g : grad_outputs) stack.emplace_back(std::move(g));
    size_t t = 0;
    for (size_t i = 0; i < saved.size(); ++i) stack.emplace_back(is_tensor[i] ? c10::IValue(tensors[t++]) : saved.get(i));
    if (program->compressed) stack.emplace_back(ctx->saved_data["state"]);
    if (program->planned) stack.emplace_back(ctx->saved_data["arena"]);
    tensors.clear();
    if (program->compressed) {
      // From here the stack alone holds the packed values, so B frees each
      // after its last use (tensors in save_for_backward stay with autograd).
      saved = c10::impl::GenericList(c10::AnyType::get());
      ctx->saved_data.erase("saved");
    }
    try {
      torch::jit::InterpreterState(*code).run(stack);
    } catch (...) {
      // The step failed part way (out of memory, a failing op): its packed
      // values go with the stack, and nothing it began may count.
      stack.clear();
      abandonStep(program, ctx->saved_data["state"], ctx->saved_data["arena"], ctx->saved_data["step"].toInt());
      throw;
    }
    auto grads = stack.back().toTupleRef().elements();
    if (program->planned) ctx->saved_data["arena"].toCustomClass<Arena>()->endStep();

    // One slot per forward argument: program, self, state, arena, step, then the tensors.
    constexpr size_t kLeading = 5;
    variable_list result(kLeading + num_inputs);
    for (size_t k = 0; k < program->grad_inputs.size(); ++k)
      if (needed[k] && grads[k].isTensor()) result[kLeading + program->grad_inputs[k]] = grads[k].toTensor();
    return result;
  }
};

// This step's arena (arena.h), planned per input shape.
c10::IValue beginArena(Program& program, const c10::intrusive_ptr<c10::ivalue::Object>& self,
                       const std::vector<at::Tensor>& inputs, const std::vector<at::Tensor>& lifted,
                       const c10::IValue& state) {
  std::vector<int64_t> key;
  for (const auto& t : inputs) {
    key.push_back(int64_t(t.scalar_type()));
    key.push_back(t.dim());
    for (int64_t s : t.sizes()) key.push_back(s);
  }
  // Packed values live where the parameters are (else the first input).
  c10::Device device = inputs.empty() ? c10::Device(c10::kCPU) : inputs[0].device();
  for (const auto& t : lifted)
    if (t.is_floating_point()) {
      device = t.device();
      break;
    }
  key.push_back(int64_t(device.type()));
  key.push_back(device.index());
  return program.arenaOf(self).toCustomClass<Arena>()->beginStep(key, device,
                                                                 state.toCustomClass<CompressionState>().get());
}

std::vector<at::Tensor> runTraining(const c10::IValue& self_value, std::vector<at::Tensor> inputs) {
  TORCH_CHECK(self_value.isObject(), "actnn::run_training expects the compiled module as its first argument");
  auto self = self_value.toObject();
  auto program = programsFor(self)->select(self, inputs);
  for (const auto& flag : program->training_flags) {
    c10::IValue module = flag.first.empty() ? c10::IValue(self) : attributePath(self, flag.first);
    bool training = module.toObjectRef().getAttr("training").toBool();
    TORCH_CHECK(training == flag.second, "actnn: submodule '", flag.first.empty() ? "<root>" : flag.first,
                "' was compiled with training=", flag.second ? "True" : "False", " but is now ",
                training ? "training" : "in eval mode", "; compile the module again after changing modes");
  }
  std::vector<at::Tensor> lifted;
  lifted.reserve(program->lifted.size());
  for (size_t i = 0; i < program->lifted.size(); ++i) {
    at::Tensor t = attributePath(self, program->lifted[i]).toTensor();
    TORCH_CHECK(!t.requires_grad() || program->lifted_requires_grad[i], "actnn: parameter '", program->lifted[i],
                "' requires grad but was frozen when the module was compiled; compile it again");
    lifted.push_back(std::move(t));
  }
  c10::IValue state = program->stateOf(self);
  const int64_t step = program->compressed ? state.toCustomClass<CompressionState>()->beginStep() : 0;
  c10::IValue arena;
  try {
    if (program->planned) arena = beginArena(*program, self, inputs, lifted, state);
    c10::IValue capsule = c10::IValue::make_capsule(program);
    return TrainingFunction::apply(capsule, self_value, state, arena, step, at::TensorList(inputs),
                                   at::TensorList(lifted));
  } catch (...) {
    abandonStep(program, state, arena, step);
    throw;
  }
}

}  // namespace

c10::IValue attributePath(const c10::intrusive_ptr<c10::ivalue::Object>& root, const std::string& path) {
  c10::IValue current(root);
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string name = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    TORCH_CHECK(current.isObject() && current.toObjectRef().type()->hasAttribute(name),
                "actnn: the module has no attribute '", path, "'");
    current = current.toObjectRef().getAttr(name);
    if (dot == std::string::npos) return current;
    start = dot + 1;
  }
}

Specializer setSpecializer(Specializer specializer) {
  std::lock_guard<std::mutex> lock(specializer_mutex);
  std::swap(installedSpecializer(), specializer);
  return specializer;
}

namespace {

const std::pair<c10::ScalarType, const char*> kDtypeNames[] = {
    {c10::kFloat, "float32"}, {c10::kDouble, "float64"}, {c10::kHalf, "float16"}, {c10::kBFloat16, "bfloat16"},
    {c10::kLong, "int64"},    {c10::kInt, "int32"},      {c10::kShort, "int16"},  {c10::kChar, "int8"},
    {c10::kByte, "uint8"},    {c10::kBool, "bool"}};

}  // namespace

std::string dtypeName(c10::ScalarType dtype) {
  for (const auto& [t, name] : kDtypeNames)
    if (t == dtype) return name;
  return c10::toString(dtype);
}

c10::optional<c10::ScalarType> dtypeNamed(const std::string& name) {
  for (const auto& [t, n] : kDtypeNames)
    if (name == n) return t;
  return c10::nullopt;
}

std::string shapeEntry(const std::string& name, c10::IntArrayRef sizes, c10::optional<c10::ScalarType> dtype) {
  std::string out = name + ":";
  for (size_t d = 0; d < sizes.size(); ++d) out += (d ? "x" : "") + std::to_string(sizes[d]);
  return dtype ? out + ":" + dtypeName(*dtype) : out;
}

std::string signatureText(const std::vector<std::string>& names, const std::vector<at::Tensor>& inputs) {
  TORCH_INTERNAL_ASSERT(names.size() == inputs.size());
  std::string out;
  for (size_t i = 0; i < inputs.size(); ++i)
    out += (i ? ";" : "") + shapeEntry(names[i], inputs[i].sizes(), inputs[i].scalar_type());
  return out;
}

std::vector<Specialization> specializations(const c10::intrusive_ptr<c10::ivalue::Object>& self) {
  auto programs = programsFor(self);
  std::lock_guard<std::mutex> lock(programs->mutex);
  return programs->built;
}

namespace {

std::tuple<std::vector<std::string>, std::vector<int64_t>, std::vector<int64_t>> specializationsOp(
    const c10::IValue& self) {
  TORCH_CHECK(self.isObject(), "actnn::specializations expects a compiled module");
  std::tuple<std::vector<std::string>, std::vector<int64_t>, std::vector<int64_t>> out;
  for (const auto& s : specializations(self.toObject())) {
    std::get<0>(out).push_back(s.signature);
    std::get<1>(out).push_back(s.fallback_ops);
    std::get<2>(out).push_back(s.branch_ops);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(actnn, m) {
  m.def("run_training(Any self, Tensor[] inputs) -> Tensor[]", &runTraining);
  // The input signatures a compiled module has been specialized to in this
  // process, how many nodes each runs under the autograd fallback, and how
  // many data-dependent branches each keeps.
  m.def("specializations(Any self) -> (str[] signatures, int[] fallback_ops, int[] branch_ops)",
        &specializationsOp);
}

}  // namespace actnn
