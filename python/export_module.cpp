// actnn::module_from_export: the TorchScript module of a torch.export
// program, for actnn.compile(..., capture="export") (python/actnn/_export.py
// writes the program's ATen graph as TorchScript IR text; this file builds the
// module that actnn::compile then compiles like a scripted one).
//
//   module_from_export(str name, str[] input_names, str[] state_names,
//                      str[] state_kinds, Tensor[] state, str[] graphs,
//                      str[][] graph_state, Dict(str, str)[] locations) -> Any
//
// state: the program's parameters, buffers and lifted constants, with their
// state_dict names and kinds (PARAMETER, BUFFER, NONPERSISTENT_BUFFER,
// CONSTANT_TENSOR). Parameters and buffers are registered under their dotted
// names (one submodule per prefix), the very tensors given, so the built
// module's state_dict keys are the original model's and its gradients land
// in the original parameters; a non-persistent buffer is a plain tensor
// attribute (read by forward, outside the state_dict); lifted constants
// become constants of the graph.
// graphs: one graph per mode — the train-mode program and, when given, the
// eval-mode one. Each takes the user inputs, then the state named by its
// graph_state entry. forward runs graphs[0] when the module is training and
// graphs[1] when it is not; with one graph, or when the two return different
// types, eval mode raises.
// locations: per graph, IR value name -> "path\nline\ncode" of the model's
// source that produced it; the node producing that value gets it as its
// source range, so the compiler's errors point at the model's line.
#include <torch/csrc/jit/api/compilation_unit.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/frontend/source_range.h>
#include <torch/csrc/jit/ir/irparser.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/library.h>

#include <sstream>
#include <unordered_map>

#include "actnn/passes/ir_builder.h"

namespace actnn {
namespace {

using torch::jit::Graph;
using torch::jit::Value;

std::vector<std::string> splitDotted(const std::string& name) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(name);
  while (std::getline(in, part, '.')) parts.push_back(part);
  return parts;
}

class ExportModuleBuilder {
 public:
  explicit ExportModuleBuilder(const std::string& name) : cu_(std::make_shared<torch::jit::CompilationUnit>()) {
    module_ = torch::jit::Module(c10::QualifiedName("__torch__.actnn.export." + identifier(name)), cu_,
                                 /*shouldMangle=*/true);
    module_.register_attribute("training", c10::BoolType::get(), true);
  }

  void addState(const std::string& name, const std::string& kind, const at::Tensor& value) {
    TORCH_CHECK(!paths_.count(name) && !constants_.count(name), "actnn::module_from_export: state '", name,
                "' is given twice");
    if (kind == "CONSTANT_TENSOR") {
      constants_[name] = value;
      return;
    }
    TORCH_CHECK(kind == "PARAMETER" || kind == "BUFFER" || kind == "NONPERSISTENT_BUFFER",
                "actnn::module_from_export: state '", name, "' has kind '", kind,
                "' (expected PARAMETER, BUFFER, NONPERSISTENT_BUFFER or CONSTANT_TENSOR)");
    std::vector<std::string> path = splitDotted(name);
    TORCH_CHECK(!path.empty(), "actnn::module_from_export: a state tensor has an empty name");
    torch::jit::Module owner = module_;
    for (size_t i = 0; i + 1 < path.size(); ++i) owner = submodule(owner, path[i], name);
    TORCH_CHECK(!owner.hasattr(path.back()), "actnn::module_from_export: '", name, "' names an existing attribute");
    if (kind == "NONPERSISTENT_BUFFER")
      owner.register_attribute(path.back(), c10::TensorType::get(), value);  // read, but not in state_dict
    else
      owner.register_parameter(path.back(), value, /*is_buffer=*/kind == "BUFFER");
    paths_[name] = path;
  }

  // Parses one program's IR text; `state` names its inputs after the user
  // inputs.
  std::shared_ptr<Graph> parse(size_t index, const std::string& text, const std::vector<std::string>& state,
                               const c10::Dict<std::string, std::string>& locations, size_t num_inputs) {
    auto g = std::make_shared<Graph>();
    std::unordered_map<std::string, Value*> values;
    try {
      torch::jit::parseIR(text, g.get(), values);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "actnn::module_from_export: program ", index, " does not parse as TorchScript IR: ",
                  e.what());
    }
    TORCH_CHECK(g->inputs().size() == num_inputs + state.size(), "actnn::module_from_export: program ", index,
                " takes ", g->inputs().size(), " inputs, expected ", num_inputs, " user inputs and ", state.size(),
                " state tensors");
    for (const auto& entry : locations) {
      auto it = values.find(entry.key());
      if (it == values.end()) continue;
      std::istringstream in(entry.value());
      std::string path, line, code;
      std::getline(in, path);
      std::getline(in, line);
      std::getline(in, code);
      auto source = std::make_shared<torch::jit::Source>(code, path, static_cast<size_t>(std::stoul(line)));
      it->second->node()->setSourceRange(torch::jit::SourceRange(source, 0, code.size()));
    }
    for (torch::jit::Node* n : g->nodes()) {
      if (n->kind().is_aten() && !n->maybeSchema()) {
        std::ostringstream ir;
        ir << *n;
        TORCH_CHECK(false, "actnn::module_from_export: no overload of ", n->kind().toQualString(),
                    " takes these argument types: ", ir.str());
      }
    }
    return g;
  }

  // The inputs of program `g` inside the forward graph being built, at its
  // insert point: the user inputs, then the state read from `self`.
  std::vector<Value*> programInputs(Graph& forward, const std::vector<std::string>& state) {
    std::vector<Value*> inputs(forward.inputs().begin() + 1, forward.inputs().end());
    Value* self = forward.inputs()[0];
    for (const std::string& name : state) {
      if (auto c = constants_.find(name); c != constants_.end()) {
        inputs.push_back(forward.insertConstant(c->second));
        continue;
      }
      auto p = paths_.find(name);
      TORCH_CHECK(p != paths_.end(), "actnn::module_from_export: a program reads state '", name,
                  "', which is not given");
      Value* v = self;
      for (const auto& attr : p->second) v = forward.insertGetAttr(v, attr);
      inputs.push_back(v);
    }
    return inputs;
  }

  torch::jit::Module build(const std::vector<std::string>& input_names,
                           const std::vector<std::shared_ptr<Graph>>& programs,
                           const std::vector<std::vector<std::string>>& states) {
    auto forward = std::make_shared<Graph>();
    forward->addInput("self")->setType(module_.type());
    for (const auto& name : input_names) forward->addInput(identifier(name))->setType(c10::TensorType::get());
    const bool same_types = programs.size() == 2 && outputTypesMatch(*programs[0], *programs[1]);
    Value* training = forward->insertGetAttr(forward->inputs()[0], "training");
    torch::jit::Node* choice = forward->insertNode(forward->create(c10::prim::If, 0));
    choice->addInput(training);
    torch::jit::Block* train = choice->addBlock();
    torch::jit::Block* eval = choice->addBlock();
    std::vector<Value*> outputs;
    {
      torch::jit::WithInsertPoint at(train);
      outputs = torch::jit::insertGraph(*forward, *programs[0], programInputs(*forward, states[0]));
      for (Value* v : outputs) train->registerOutput(v);
    }
    {
      torch::jit::WithInsertPoint at(eval);
      if (same_types) {
        for (Value* v : torch::jit::insertGraph(*forward, *programs[1], programInputs(*forward, states[1])))
          eval->registerOutput(v);
      } else {
        const std::string why =
            programs.size() == 1
                ? "actnn: this module was compiled from a train-mode torch.export program only; "
                  "compile the nn.Module with capture='export' to run it in eval mode"
                : "actnn: the model returns different types in train and eval mode, which one TorchScript "
                  "forward cannot hold; this module trains only (run the original model for evaluation)";
        forward->insert(c10::prim::RaiseException, {why});
        for (Value* v : outputs) {
          eval->registerOutput(forward->insertNode(forward->createUninitialized(v->type()))->output());
        }
      }
    }
    for (Value* v : outputs) choice->addOutput()->setType(v->type());
    for (Value* v : choice->outputs()) forward->registerOutput(v);
    torch::jit::EliminateDeadCode(forward);
    auto* fn = cu_->create_function(c10::QualifiedName(*module_.type()->name(), "forward"), forward);
    module_.type()->addMethod(fn);
    return module_;
  }

 private:
  static bool outputTypesMatch(const Graph& a, const Graph& b) {
    if (a.outputs().size() != b.outputs().size()) return false;
    for (size_t i = 0; i < a.outputs().size(); ++i)
      if (*a.outputs()[i]->type() != *b.outputs()[i]->type()) return false;
    return true;
  }

  torch::jit::Module submodule(torch::jit::Module parent, const std::string& name, const std::string& full) {
    if (parent.hasattr(name)) {
      auto existing = parent.attr(name);
      TORCH_CHECK(existing.isModule(), "actnn::module_from_export: '", full, "' goes through '", name,
                  "', which is not a module");
      return existing.toModule();
    }
    torch::jit::Module child(c10::QualifiedName("__torch__.actnn.export.Submodule"), cu_, /*shouldMangle=*/true);
    child.register_attribute("training", c10::BoolType::get(), true);
    parent.register_module(name, child);
    return child;
  }

  std::shared_ptr<torch::jit::CompilationUnit> cu_;
  torch::jit::Module module_;
  std::unordered_map<std::string, std::vector<std::string>> paths_;
  std::unordered_map<std::string, at::Tensor> constants_;
};

c10::IValue moduleFromExport(const std::string& name, const std::vector<std::string>& input_names,
                             const std::vector<std::string>& state_names, const std::vector<std::string>& state_kinds,
                             const std::vector<at::Tensor>& state, const std::vector<std::string>& graphs,
                             const std::vector<std::vector<std::string>>& graph_state,
                             const c10::List<c10::Dict<std::string, std::string>>& locations) {
  TORCH_CHECK(state_names.size() == state_kinds.size() && state_names.size() == state.size(),
              "actnn::module_from_export: state_names, state_kinds and state differ in length");
  TORCH_CHECK(!graphs.empty() && graphs.size() <= 2 && graph_state.size() == graphs.size() &&
                  locations.size() == graphs.size(),
              "actnn::module_from_export: expected one or two graphs (train, eval), each with its state and "
              "locations");
  ExportModuleBuilder builder(name);
  for (size_t i = 0; i < state.size(); ++i) builder.addState(state_names[i], state_kinds[i], state[i]);
  std::vector<std::shared_ptr<Graph>> programs;
  for (size_t i = 0; i < graphs.size(); ++i)
    programs.push_back(builder.parse(i, graphs[i], graph_state[i], locations.get(i), input_names.size()));
  return c10::IValue(builder.build(input_names, programs, graph_state)._ivalue());
}

TORCH_LIBRARY_FRAGMENT(actnn, m) {
  m.def(
      "module_from_export(str name, str[] input_names, str[] state_names, str[] state_kinds, Tensor[] state, "
      "str[] graphs, str[][] graph_state, Dict(str, str)[] locations) -> Any",
      moduleFromExport);
}

}  // namespace
}  // namespace actnn
