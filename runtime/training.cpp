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
  bool compressed = false;  // F and B take the module's CompressionState last
  bool planned = false;     // ... and after it the module's Arena (L5)
  std::mutex mutex;
  std::map<std::vector<bool>, std::shared_ptr<torch::jit::Code>> backward;  // by needed outputs

  std::shared_ptr<torch::jit::Code> backwardFor(const std::vector<bool>& needed) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = backward.find(needed);
    if (it != backward.end()) return it->second;
    auto graph = specializeBackward(backward_graph, needed);
    auto code = std::make_shared<torch::jit::Code>(graph, "actnn_backward");
    backward.emplace(needed, code);
    return code;
  }
};


std::shared_ptr<torch::jit::Graph> methodGraph(const c10::ClassTypePtr& type, const std::string& name) {
  auto* fn = type->findMethod(name);
  TORCH_CHECK(fn, "actnn: ", type->repr_str(), " has no method ", name,
              "; it was not produced by actnn::compile");
  return torch::jit::toGraphFunction(*fn).graph();
}

c10::intrusive_ptr<Program> loadProgram(const c10::intrusive_ptr<c10::ivalue::Object>& self) {
  auto program = c10::make_intrusive<Program>();
  const auto& type = self->type();
  program->forward = std::make_unique<torch::jit::Code>(methodGraph(type, "_actnn_forward_graph")->copy(),
                                                        "actnn_forward");
  program->backward_graph = methodGraph(type, "_actnn_backward_graph");
  for (const auto& s : self->getAttr("_actnn_lifted").toListRef()) program->lifted.push_back(s.toStringRef());
  for (const auto& b : self->getAttr("_actnn_lifted_requires_grad").toListRef())
    program->lifted_requires_grad.push_back(b.toBool());
  for (const auto& i : self->getAttr("_actnn_grad_inputs").toListRef()) program->grad_inputs.push_back(i.toInt());
  for (const auto& s : self->getAttr("_actnn_training_flags").toListRef()) {
    const std::string& entry = s.toStringRef();  // "path=0|1"
    auto eq = entry.rfind('=');
    program->training_flags.emplace_back(entry.substr(0, eq), entry.substr(eq + 1) == "1");
  }
  program->num_outputs = self->getAttr("_actnn_num_outputs").toInt();
  program->compressed = type->hasAttribute("_actnn_state");
  program->planned = type->hasAttribute("_actnn_arena");
  return program;
}

// One Program per compiled class type, built on first use.
c10::intrusive_ptr<Program> programFor(const c10::intrusive_ptr<c10::ivalue::Object>& self) {
  static std::mutex mutex;
  static std::unordered_map<const c10::ClassType*, std::pair<std::weak_ptr<c10::ClassType>, c10::intrusive_ptr<Program>>>
      cache;
  std::lock_guard<std::mutex> lock(mutex);
  const auto& type = self->type();
  auto it = cache.find(type.get());
  if (it != cache.end() && it->second.first.lock() == type) return it->second.second;
  auto program = loadProgram(self);
  cache[type.get()] = {type, program};
  return program;
}

struct TrainingFunction : torch::autograd::Function<TrainingFunction> {
  static variable_list forward(AutogradContext* ctx, c10::IValue program_value, c10::IValue self,
                               c10::IValue state, c10::IValue arena, at::TensorList inputs, at::TensorList lifted) {
    auto program = c10::static_intrusive_pointer_cast<Program>(program_value.toCapsule());
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
    torch::jit::InterpreterState(*code).run(stack);
    auto grads = stack.back().toTupleRef().elements();
    if (program->planned) ctx->saved_data["arena"].toCustomClass<Arena>()->endStep();

    // One slot per forward argument: program, self, state, arena, then the tensors.
    constexpr size_t kLeading = 4;
    variable_list result(kLeading + num_inputs);
    for (size_t k = 0; k < program->grad_inputs.size(); ++k)
      if (needed[k] && grads[k].isTensor()) result[kLeading + program->grad_inputs[k]] = grads[k].toTensor();
    return result;
  }
};

std::vector<at::Tensor> runTraining(const c10::IValue& self_value, std::vector<at::Tensor> inputs) {
  TORCH_CHECK(self_value.isObject(), "actnn::run_training expects the compiled module as its first argument");
  auto self = self_value.toObject();
  auto program = programFor(self);
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
  c10::IValue state;
  if (program->compressed) {
    state = self->getAttr("_actnn_state");
    state.toCustomClass<CompressionState>()->beginStep();
  }
  c10::IValue arena;
  if (program->planned) {
    // The arena is planned per input shape (arena.h).
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
    arena = self->getAttr("_actnn_arena").toCustomClass<Arena>()->beginStep(
        key, device, state.toCustomClass<CompressionState>().get());
  }
  c10::IValue capsule = c10::IValue::make_capsule(program);
  return TrainingFunction::apply(capsule, self_value, state, arena, at::TensorList(inputs), at::TensorList(lifted));
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

TORCH_LIBRARY_FRAGMENT(actnn, m) {
  m.def("run_training(Any self, Tensor[] inputs) -> Tensor[]", &runTraining);
}

}  // namespace actnn
