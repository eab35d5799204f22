// The ONNX front end (actnn/passes/onnx_import.h): reading and checking a
// model, then building the TorchScript module.
//
// The module is built directly rather than through TorchScript source:
// parameters and buffers are registered under their initializer names (one
// submodule per dotted prefix), and forward's graph reads them with
// prim::GetAttr chains from `self`, exactly like a scripted module's graph,
// so lower-module lifts them the same way. Nodes are lowered in order (the
// checker guarantees a topological order). After each node's ATen ops are
// emitted, those whose operands are all constants are evaluated at once
// (torch::jit::runNodeIfInputsAreConstant) and replaced by constants: this is
// what folds Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains, and
// what lets a later op that needs a constant operand find one.
//
// Shapes: a lowering that needs an operand's shape (a rank for Unsqueeze's
// or Expand's axes, sizes for Gather's negative indices) takes it from ONNX
// shape inference, and where that lost it (libonnx 1.12 gives up on many
// Reshape -> Transpose chains of exporters) from our own propagation: every
// ATen node emitted is also run on meta tensors -- the declared input shapes,
// the initializers' shapes, constants -- which gives each result's sizes and
// dtype without computing anything. Where both know a shape they must agree,
// or the import stops naming the value (a bug on one side).
#include "actnn/passes/onnx_import.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include <ATen/ATen.h>
#include <onnx/checker.h>
#include <onnx/defs/parser.h>
#include <onnx/shape_inference/implementation.h>
#include <torch/csrc/jit/api/compilation_unit.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include "actnn/passes/ir_builder.h"
#include "context.h"

namespace actnn {
namespace onnx {

namespace {

bool endsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool isDefaultDomain(const std::string& domain) { return domain.empty() || domain == "ai.onnx"; }

// "onnx::Conv_193" -> "onnx__Conv_193": one component of a dotted path.
std::string component(const std::string& name) {
  std::string out;
  for (char ch : name) out += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  if (out.empty()) out = "_";
  return out;
}

std::vector<std::string> splitPath(const std::string& name) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(name);
  while (std::getline(in, part, '.')) parts.push_back(component(part));
  if (parts.empty()) parts.push_back("_");
  return parts;
}

enum class InitRole { Constant, Parameter, Buffer };

// How each initializer is read: as data (a parameter when it is a float
// tensor of rank 1 or more), as batch normalization's running statistics (a
// buffer), or only where an op needs a constant (a constant). Rank-0 float
// initializers are constants: that is how simplifiers and exporters store the
// scalars of a computation (sqrt(2) of GELU, an epsilon, an attention scale),
// which must not train, and which the folding and the GELU fusion need to see
// as constants. (A one-element bias, Linear(k, 1)'s, has rank 1.)
std::unordered_map<std::string, InitRole> initializerRoles(const ::onnx::GraphProto& g) {
  std::unordered_map<std::string, InitRole> roles;
  std::unordered_map<std::string, bool> is_float;
  for (const auto& init : g.initializer()) {
    roles[init.name()] = InitRole::Constant;
    const auto t = init.data_type();
    is_float[init.name()] = init.dims_size() > 0 &&
                            (t == ::onnx::TensorProto::FLOAT || t == ::onnx::TensorProto::DOUBLE ||
                             t == ::onnx::TensorProto::FLOAT16 || t == ::onnx::TensorProto::BFLOAT16);
  }
  const auto& table = opTable();
  for (const auto& node : g.node()) {
    auto op = table.find(node.op_type());
    for (int i = 0; i < node.input_size(); ++i) {
      auto it = roles.find(node.input(i));
      if (it == roles.end() || !is_float[it->first]) continue;
      if (node.op_type() == "BatchNormalization" && (i == 3 || i == 4)) {
        it->second = InitRole::Buffer;
      } else if (op == table.end() || !op->second.constant_inputs.count(i)) {
        if (it->second != InitRole::Buffer) it->second = InitRole::Parameter;
      }
    }
  }
  return roles;
}

c10::optional<Shape> staticShape(const ::onnx::TypeProto& type) {
  if (!type.has_tensor_type() || !type.tensor_type().has_shape()) return c10::nullopt;
  Shape s;
  for (const auto& d : type.tensor_type().shape().dim()) {
    if (!d.has_dim_value()) return c10::nullopt;
    s.push_back(d.dim_value());
  }
  return s;
}

// The scalar value of a one-element constant tensor operand, if it is one.
c10::optional<double> scalarConstant(Value* v) {
  auto iv = torch::jit::toIValue(v);
  if (!iv) return c10::nullopt;
  if (iv->isDouble() || iv->isInt()) return iv->toScalar().toDouble();
  if (iv->isTensor() && iv->toTensor().numel() == 1) return iv->toTensor().item<double>();
  return c10::nullopt;
}

bool isOp(torch::jit::Node* n, c10::Symbol kind) { return n->kind() == kind; }

// The operand of binary node `n` that is not `v` (nullptr if neither is).
Value* otherOperand(torch::jit::Node* n, Value* v) {
  if (n->input(0) == v) return n->input(1);
  if (n->input(1) == v) return n->input(0);
  return nullptr;
}

bool near(c10::optional<double> v, double want) { return v && std::abs(*v - want) < 1e-6 * std::max(1.0, want); }

// Erf-based GELU as exporters write it, x * (erf(x / sqrt(2)) + 1) * 0.5
// (torch.onnx's Mul(Mul(x, Add(Erf(Div(x, 1.41421)), 1)), 0.5), products in
// either operand order), becomes one aten::gelu: backward then saves x once
// (quantizable as a GELU input) instead of x, the erf argument and the sum.
void fuseErfGelu(Graph& graph) {
  std::vector<torch::jit::Node*> erfs;
  for (auto* n : graph.nodes())
    if (isOp(n, c10::aten::erf)) erfs.push_back(n);
  for (auto* erf : erfs) {
    auto* div = erf->input(0)->node();
    if (!isOp(div, c10::aten::div) || div->inputs().size() != 2 || !near(scalarConstant(div->input(1)), std::sqrt(2.0)))
      continue;
    Value* x = div->input(0);
    if (erf->output()->uses().size() != 1 || div->output()->uses().size() != 1) continue;
    auto* add = erf->output()->uses()[0].user;
    if (!isOp(add, c10::aten::add) || add->inputs().size() != 3 || !near(scalarConstant(add->input(2)), 1.0) ||
        !near(scalarConstant(otherOperand(add, erf->output())), 1.0) || add->output()->uses().size() != 1)
      continue;
    auto* inner = add->output()->uses()[0].user;
    if (!isOp(inner, c10::aten::mul) || otherOperand(inner, add->output()) != x || inner->output()->uses().size() != 1)
      continue;
    auto* outer = inner->output()->uses()[0].user;
    if (!isOp(outer, c10::aten::mul) || !near(scalarConstant(otherOperand(outer, inner->output())), 0.5)) continue;
    torch::jit::WithInsertPoint guard(outer);
    Value* gelu = graph.insert(c10::aten::gelu, {x}, {torch::jit::NamedValue("approximate", std::string("none"))});
    if (outer->output()->hasDebugName()) gelu->setDebugName(outer->output()->debugName());
    outer->output()->replaceAllUsesWith(gelu);
    for (auto* n : {outer, inner, add, erf, div}) n->destroy();
  }
}

class Importer {
 public:
  Importer(const ::onnx::ModelProto& model, std::string origin) : model_(model), origin_(std::move(origin)) {}

  torch::jit::Module run() {
    opset_ = defaultOpset(model_);
    if (opset_ < kMinOpset || opset_ > kMaxOpset)
      throw ImportError(origin_ + ": the model imports opset " + std::to_string(opset_) +
                        " of the default domain (ai.onnx); supported opsets are " + std::to_string(kMinOpset) +
                        "-" + std::to_string(kMaxOpset));
    const auto& g = model_.graph();
    checkOps(g);
    inferShapes();
    buildModule(g);
    for (int i = 0; i < g.node_size(); ++i) lowerNode(g.node(i), i);
    std::vector<Value*> outs;
    for (const auto& out : g.output()) {
      Value* v = lookup(out.name());
      if (!v) throw ImportError(origin_ + ": graph output '" + out.name() + "' is not produced by any node");
      outs.push_back(v);
    }
    if (outs.empty()) throw ImportError(origin_ + ": the graph has no outputs");
    if (outs.size() == 1) {
      graph_->registerOutput(outs[0]);
    } else {
      graph_->registerOutput(graph_->insertNode(graph_->createTuple(outs))->output());
    }
    fuseErfGelu(*graph_);
    guardInputShapes();
    torch::jit::EliminateDeadCode(graph_);
    auto* fn = module_._ivalue()->compilation_unit()->create_function(
        c10::QualifiedName(*module_.type()->name(), "forward"), graph_);
    module_.type()->addMethod(fn);
    return module_;
  }

 private:
  void checkOps(const ::onnx::GraphProto& g) {
    if (model_.functions_size() > 0)
      throw UnsupportedError(origin_ + ": model-local functions are not supported");
    for (int i = 0; i < g.node_size(); ++i) {
      const auto& node = g.node(i);
      int64_t version = opset_;
      for (const auto& op : model_.opset_import())
        if (op.domain() == node.domain()) version = op.version();
      const std::string where = origin_ + ": node " + std::to_string(i) +
                                (node.name().empty() ? "" : " '" + node.name() + "'") + " (op " + node.op_type() +
                                ", domain " + (node.domain().empty() ? "ai.onnx" : node.domain()) + ", opset " +
                                std::to_string(version) + ")";
      if (!isDefaultDomain(node.domain()))
        throw UnsupportedError(where + ": ops outside the default domain are not supported");
      if (!isSupportedOp(node.op_type()))
        throw UnsupportedError(where + ": unsupported op; supported: " + [] {
          std::string all;
          for (const auto& op : supportedOps()) all += (all.empty() ? "" : ", ") + op;
          return all;
        }());
      for (const auto& in : node.input())
        if (!in.empty()) used_.insert(in);
    }
    for (const auto& out : g.output()) used_.insert(out.name());
  }

  void inferShapes() {
    ::onnx::ModelProto copy = model_;
    // Strict: a node whose output types cannot be inferred is an error in
    // the model (BatchNormalization with training_mode=1 and one output,
    // mismatched operand types, ...), named here rather than at the first op
    // that needs a type.
    try {
      ::onnx::shape_inference::InferShapes(copy, ::onnx::OpSchemaRegistry::Instance(),
                                           ::onnx::ShapeInferenceOptions(/*check_type=*/true, /*error_mode=*/1,
                                                                        /*enable_data_propagation=*/true));
    } catch (const std::exception& e) {
      throw ImportError(origin_ + ": ONNX shape inference rejects the model: " + e.what());
    }
    auto record = [&](const ::onnx::ValueInfoProto& vi) {
      if (auto s = staticShape(vi.type())) shapes_[vi.name()] = *s;
      if (vi.type().has_tensor_type() && vi.type().tensor_type().elem_type() != 0) {
        try {
          dtypes_[vi.name()] = scalarTypeOf(vi.type().tensor_type().elem_type(), vi.name());
        } catch (const UnsupportedError&) {
          // Reported by the op that reads it, if any does.
        }
      }
    };
    for (const auto& vi : copy.graph().input()) record(vi);
    for (const auto& vi : copy.graph().value_info()) record(vi);
    for (const auto& vi : copy.graph().output()) record(vi);
    for (const auto& init : copy.graph().initializer()) {
      shapes_[init.name()] = Shape(init.dims().begin(), init.dims().end());
      try {
        dtypes_[init.name()] = scalarTypeOf(init.data_type(), init.name());
      } catch (const UnsupportedError&) {
      }
    }
  }

  torch::jit::Module submodule(torch::jit::Module parent, const std::string& name) {
    if (auto existing = parent.attr(name, c10::IValue()); existing.isModule()) return existing.toModule();
    if (parent.hasattr(name)) return torch::jit::Module();
    torch::jit::Module child(c10::QualifiedName("__torch__.actnn.onnx.Submodule"), cu_, /*shouldMangle=*/true);
    child.register_attribute("training", c10::BoolType::get(), true);
    parent.register_module(name, child);
    return child;
  }

  // Registers `value` under its dotted initializer name; returns the chain of
  // attribute names from the root module.
  std::vector<std::string> registerState(const std::string& name, const at::Tensor& value, InitRole role) {
    std::vector<std::string> path = splitPath(name);
    torch::jit::Module owner = module_;
    for (size_t i = 0; i + 1 < path.size() && owner._ivalue(); ++i) owner = submodule(owner, path[i]);
    if (!owner._ivalue() || owner.hasattr(path.back())) {
      // The dotted form collides with another name: fall back to one flat name.
      std::string flat = component(name);
      while (module_.hasattr(flat)) flat += "_";
      path = {flat};
      owner = module_;
    }
    if (role == InitRole::Parameter) {
      owner.register_parameter(path.back(), value.detach().requires_grad_(true), /*is_buffer=*/false);
    } else {
      owner.register_buffer(path.back(), value);
    }
    return path;
  }

  void buildModule(const ::onnx::GraphProto& g) {
    cu_ = std::make_shared<torch::jit::CompilationUnit>();
    module_ = torch::jit::Module(c10::QualifiedName("__torch__.actnn.onnx." + identifier(g.name().empty() ? "Model" : g.name())),
                                 cu_, /*shouldMangle=*/true);
    module_.register_attribute("training", c10::BoolType::get(), true);
    graph_ = std::make_shared<Graph>();
    Value* self = graph_->addInput("self");
    self->setType(module_.type());

    auto roles = initializerRoles(g);
    for (const auto& init : g.initializer()) {
      at::Tensor t = toTensor(init, origin_ + ": initializer '" + init.name() + "'");
      InitRole role = roles[init.name()];
      if (role == InitRole::Constant) {
        env_[init.name()] = graph_->insertConstant(t);
        continue;
      }
      auto path = registerState(init.name(), t, role);
      Value* v = self;
      for (const auto& attr : path) v = graph_->insertGetAttr(v, attr);
      meta_[v] = c10::IValue(at::empty(t.sizes(), t.options().device(at::kMeta)));
      v->setDebugName(identifier(init.name()));
      env_[init.name()] = v;
    }
    for (const auto& in : g.input()) {
      if (env_.count(in.name())) continue;  // an initializer listed as an input (IR version < 4)
      if (!in.type().has_tensor_type())
        throw UnsupportedError(origin_ + ": graph input '" + in.name() + "' is not a tensor");
      Value* v = graph_->addInput(identifier(in.name()));
      auto dtype = scalarTypeOf(in.type().tensor_type().elem_type(), origin_ + ": graph input '" + in.name() + "'");
      auto type = c10::TensorType::get()->withScalarType(dtype);
      if (auto s = staticShape(in.type())) {
        type = type->withSizes(*s);
        input_shapes_.emplace_back(v, *s);
        meta_[v] = c10::IValue(at::empty(*s, at::TensorOptions().dtype(dtype).device(at::kMeta)));
      }
      v->setType(type);
      env_[in.name()] = v;
    }
  }

  Value* lookup(const std::string& name) const {
    auto it = env_.find(name);
    return it == env_.end() ? nullptr : it->second;
  }

  // Evaluates, in order, the nodes after `last` whose operands are constants.
  void foldFrom(torch::jit::Node* last, std::vector<Value*>& outputs) {
    for (auto it = last->next()->iterator(); it != graph_->nodes().end();) {
      torch::jit::Node* n = *it;
      ++it;
      if (n->kind() == c10::prim::Constant) continue;
      auto values = torch::jit::runNodeIfInputsAreConstant(n);
      if (!values || values->size() != n->outputs().size()) continue;
      torch::jit::WithInsertPoint guard(n);
      std::vector<Value*> constants;
      for (const auto& v : *values) {
        auto c = torch::jit::tryInsertConstant(*graph_, v.isTensor() ? c10::IValue(v.toTensor().detach()) : v);
        if (!c) break;
        constants.push_back(*c);
      }
      if (constants.size() != values->size()) {
        for (Value* c : constants) c->node()->destroy();
        continue;
      }
      for (size_t i = 0; i < constants.size(); ++i) {
        for (Value*& out : outputs)
          if (out == n->output(i)) out = constants[i];
        n->output(i)->replaceAllUsesWith(constants[i]);
      }
      n->destroy();
    }
  }

  // The meta stand-in of a graph value: a constant's (tensors as meta), or
  // what propagate() recorded.
  c10::optional<c10::IValue> metaOf(Value* v) const {
    if (auto c = torch::jit::toIValue(v)) return standIn(*c, /*to_meta=*/true);
    auto it = meta_.find(v);
    if (it == meta_.end()) return c10::nullopt;
    return it->second;
  }

  // The sizes and dtype of a value propagate() knows as a tensor.
  c10::optional<at::Tensor> metaTensor(const Value* v) const {
    auto it = meta_.find(v);
    if (it == meta_.end() || !it->second.isTensor()) return c10::nullopt;
    return it->second.toTensor();
  }

  // Runs n on `stack` (meta stand-ins, ir_builder.h's runOnStandIns); the
  // list and tuple nodes the lowerings emit have no operator to run, and are
  // built here.
  static bool evaluateOnStandIns(torch::jit::Node* n, torch::jit::Stack& stack) {
    if (n->kind() == c10::prim::ListConstruct) {
      c10::IValue list;
      if (std::all_of(stack.begin(), stack.end(), [](const c10::IValue& v) { return v.isTensor(); })) {
        c10::List<at::Tensor> tensors;
        for (const auto& v : stack) tensors.push_back(v.toTensor());
        list = tensors;
      } else if (std::all_of(stack.begin(), stack.end(), [](const c10::IValue& v) { return v.isInt(); })) {
        c10::List<int64_t> ints;
        for (const auto& v : stack) ints.push_back(v.toInt());
        list = ints;
      } else {
        return false;
      }
      stack = {list};
      return true;
    }
    if (n->kind() == c10::prim::ListUnpack) {
      if (stack.size() != 1 || !stack[0].isList()) return false;
      const auto elements = stack[0].toListRef();
      if (elements.size() != n->outputs().size()) return false;
      stack.assign(elements.begin(), elements.end());
      return true;
    }
    if (n->kind() == c10::prim::TupleConstruct) {
      stack = {c10::ivalue::Tuple::create(std::vector<c10::IValue>(stack.begin(), stack.end()))};
      return true;
    }
    const std::vector<c10::IValue> inputs(stack.begin(), stack.end());
    return actnn::runOnStandIns(n, inputs, stack);
  }

  // Runs the nodes after `last` on meta tensors, recording their tensor
  // results' sizes and dtypes. A node that cannot run there (an operand of
  // unknown shape, an op reading values such as aten::item, an op without a
  // meta kernel) leaves its results unknown.
  void propagate(torch::jit::Node* last) {
    for (torch::jit::Node* n = last->next(); n != graph_->return_node(); n = n->next()) {
      if (n->kind() == c10::prim::Constant) continue;
      torch::jit::Stack stack;
      bool known = true;
      for (Value* in : n->inputs()) {
        auto m = metaOf(in);
        if (!m) {
          known = false;
          break;
        }
        stack.push_back(*m);
      }
      if (!known) continue;
      if (!evaluateOnStandIns(n, stack)) continue;
      for (size_t i = 0; i < stack.size(); ++i) meta_[n->output(i)] = standIn(stack[i], /*to_meta=*/true);
    }
  }

  // An ONNX value's sizes: from ONNX shape inference, else from propagate().
  c10::optional<Shape> shapeOf(const std::string& name) const {
    auto it = shapes_.find(name);
    if (it != shapes_.end()) return it->second;
    Value* v = lookup(name);
    auto m = v ? metaTensor(v) : c10::nullopt;
    if (!m) return c10::nullopt;
    return m->sizes().vec();
  }

  // Where ONNX shape inference and propagate() both know an output, they agree.
  void crossCheck(const NodeContext& ctx, const std::string& name, Value* v) const {
    auto onnx_shape = shapes_.find(name);
    auto ours = metaTensor(v);
    if (onnx_shape == shapes_.end() || !ours) return;
    if (ours->sizes().vec() == onnx_shape->second) return;
    auto str = [](at::IntArrayRef s) {
      std::string out;
      for (size_t i = 0; i < s.size(); ++i) out += (i ? "x" : "") + std::to_string(s[i]);
      return out.empty() ? std::string("a scalar") : out;
    };
    ctx.fail("output '" + name + "' has shape " + str(onnx_shape->second) + " by ONNX shape inference but " +
             str(ours->sizes()) + " as imported (please report this model)");
  }

  void lowerNode(const ::onnx::NodeProto& node, int index) {
    const OpLowering& lowering = opTable().at(node.op_type());
    NodeContext ctx(
        *graph_, node, index, opset_, origin_, [this](const std::string& n) { return lookup(n); },
        [this](const std::string& n) { return shapeOf(n); },
        [this](const std::string& n) -> c10::optional<at::ScalarType> {
          auto it = dtypes_.find(n);
          if (it != dtypes_.end()) return it->second;
          Value* v = lookup(n);
          auto m = v ? metaTensor(v) : c10::nullopt;
          if (!m) return c10::nullopt;
          return m->scalar_type();
        },
        [this](const std::string& n) { return used_.count(n) > 0; });
    for (int i = 0; i < node.input_size(); ++i)
      if (!node.input(i).empty() && !lookup(node.input(i)))
        ctx.fail("input " + std::to_string(i) + " '" + node.input(i) +
                 "' is dangling: no earlier node, graph input or initializer defines it");
    if (node.op_type() == "Shape" && !torch::jit::toIValue(lookup(node.input(0)))) shapes_evaluated_ = true;
    torch::jit::Node* last = graph_->return_node()->prev();
    lowering.lower(ctx);
    std::vector<Value*> outputs;
    for (size_t i = 0; i < ctx.numOutputs(); ++i) outputs.push_back(ctx.outputValue(i));
    if (!lowering.random) foldFrom(last, outputs);
    propagate(last);
    for (size_t i = 0; i < outputs.size(); ++i) {
      const std::string& name = node.output(i);
      if (name.empty()) continue;
      if (!outputs[i]) {
        if (ctx.outputUsed(i)) ctx.unsupported("output " + std::to_string(i) + " '" + name + "' is not supported");
        continue;
      }
      crossCheck(ctx, name, outputs[i]);
      if (outputs[i]->node()->kind() != c10::prim::Constant && !outputs[i]->hasDebugName())
        outputs[i]->setDebugName(identifier(name));
      env_[name] = outputs[i];
    }
  }

  const ::onnx::ModelProto& model_;
  std::string origin_;
  int64_t opset_ = 0;
  std::shared_ptr<torch::jit::CompilationUnit> cu_;
  torch::jit::Module module_;
  std::shared_ptr<Graph> graph_;
  std::unordered_map<std::string, Value*> env_;
  std::unordered_map<std::string, Shape> shapes_;
  std::unordered_map<std::string, at::ScalarType> dtypes_;
  std::unordered_map<const Value*, c10::IValue> meta_;  // propagate()'s results: tensors as meta
  std::unordered_set<std::string> used_;
  bool shapes_evaluated_ = false;  // a Shape of a computed value was folded
  std::vector<std::pair<Value*, Shape>> input_shapes_;  // static shapes of forward's inputs

  // When Shape was evaluated at import, the graph holds the declared input
  // shapes as constants: forward first checks that its inputs have them, so
  // another batch size fails with this message, not in some reshape.
  void guardInputShapes() {
    if (!shapes_evaluated_) return;
    torch::jit::WithInsertPoint guard(graph_->block()->nodes().front());
    for (const auto& [input, shape] : input_shapes_) {
      std::ostringstream expected;
      for (size_t i = 0; i < shape.size(); ++i) expected << (i ? "x" : "") << shape[i];
      Value* sizes = graph_->insert(c10::aten::size, {input});
      Value* same = graph_->insert(c10::aten::eq, {sizes, graph_->insertConstant(shape)});
      torch::jit::Node* branch = graph_->insertNode(graph_->create(c10::prim::If, {same}, 0));
      branch->addBlock();
      torch::jit::Block* otherwise = branch->addBlock();
      torch::jit::WithInsertPoint raise_point(otherwise);
      const std::string message = origin_ + ": this model was imported for input '" + input->debugName() +
                                  "' of shape " + expected.str() +
                                  " (its Shape ops were evaluated at import); export it with the shape it is "
                                  "run with";
      otherwise->appendNode(graph_->create(
          c10::prim::RaiseException,
          {graph_->insertConstant(message), graph_->insertConstant(std::string("builtins.RuntimeError"))}, 0));
    }
  }
};

}  // namespace

int64_t defaultOpset(const ::onnx::ModelProto& model) {
  for (const auto& op : model.opset_import())
    if (isDefaultDomain(op.domain())) return op.version();
  return 0;
}

namespace {

// libonnx 1.12's shape inference divides by these attributes without checking
// them (a Conv with a stride of 0 is SIGFPE in convPoolShapeInference: the
// mutation campaign's finding), and its checker does not look at values.
// Checked here, in subgraphs too, before any shape inference runs.
void checkDivisorAttributes(const ::onnx::GraphProto& g, const std::string& origin) {
  static const std::unordered_set<std::string> windowed = {"Conv",    "ConvTranspose", "ConvInteger", "QLinearConv",
                                                           "MaxPool", "AveragePool",   "LpPool",      "MaxUnpool"};
  for (int i = 0; i < g.node_size(); ++i) {
    const ::onnx::NodeProto& node = g.node(i);
    const bool default_domain = node.domain().empty() || node.domain() == "ai.onnx";
    const std::string where = origin + ": node " + std::to_string(i) +
                              (node.name().empty() ? "" : " '" + node.name() + "'") + " (op " + node.op_type() + ")";
    for (const auto& a : node.attribute()) {
      if (default_domain && windowed.count(node.op_type())) {
        const bool sizes = a.name() == "strides" || a.name() == "dilations" || a.name() == "kernel_shape";
        for (int64_t v : a.ints())
          if (sizes && v < 1)
            throw ImportError(where + ": attribute " + a.name() + " holds " + std::to_string(v) +
                              "; each entry must be at least 1");
        if (a.name() == "group" && a.i() < 1)
          throw ImportError(where + ": attribute group is " + std::to_string(a.i()) + "; it must be at least 1");
      }
      if (a.has_g()) checkDivisorAttributes(a.g(), origin);
      for (const auto& sub : a.graphs()) checkDivisorAttributes(sub, origin);
    }
  }
}

}  // namespace

void checkModel(const ::onnx::ModelProto& model, const std::string& origin) {
  checkDivisorAttributes(model.graph(), origin);
  try {
    ::onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    throw ImportError(origin + ": the ONNX checker rejects the model: " + e.what());
  }
}

::onnx::ModelProto parseModelText(const std::string& text, const std::string& origin) {
  ::onnx::ModelProto model;
  ::onnx::Common::Status status;
  try {
    status = ::onnx::OnnxParser::Parse(model, text.c_str());
  } catch (const std::exception& e) {
    // ONNX's parser reads numbers with std::stoll / std::stof, whose
    // exceptions name only the function.
    throw ImportError(origin + ": not valid ONNX text syntax: a number is malformed or out of range (" + e.what() +
                      ")");
  }
  if (!status.IsOK()) throw ImportError(origin + ": not valid ONNX text syntax: " + status.ErrorMessage());
  return model;
}

bool isModelPath(const std::string& path) { return endsWith(path, ".onnx") || endsWith(path, ".onnxtxt"); }

::onnx::ModelProto loadModel(const std::string& path) {
  ::onnx::ModelProto model = readModel(path);
  checkModel(model, path);
  return model;
}

::onnx::ModelProto readModel(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ImportError(path + ": cannot open the file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (endsWith(path, ".onnxtxt")) return parseModelText(buffer.str(), path);
  ::onnx::ModelProto model;
  if (!model.ParseFromString(buffer.str()))
    throw ImportError(path + ": not a binary ONNX model (the protobuf does not parse)");
  return model;
}

torch::jit::Module importModel(const ::onnx::ModelProto& model, const std::string& origin) {
  return Importer(model, origin).run();
}

torch::jit::Module importFile(const std::string& path) { return importModel(loadModel(path), path); }

std::vector<std::string> supportedOps() {
  std::vector<std::string> ops;
  for (const auto& entry : opTable()) ops.push_back(entry.first);
  return ops;
}

bool isSupportedOp(const std::string& op_type) { return opTable().count(op_type) > 0; }

bool isConstantOperand(const std::string& op_type, int input) {
  auto it = opTable().find(op_type);
  return it != opTable().end() && it->second.constant_inputs.count(input) > 0;
}

}  // namespace onnx
}  // namespace actnn
