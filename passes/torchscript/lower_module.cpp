// lower-module: a module's forward method becomes one self-contained graph.
//
//   graph(%self : __torch__.Net, %x : Tensor):
//     %conv : __torch__.Conv2d = prim::GetAttr[name="conv"](%self)
//     %w : Tensor = prim::GetAttr[name="weight"](%conv)
//     %t : bool = prim::GetAttr[name="training"](%conv)
// becomes
//   graph(%x : Tensor, %conv.weight : Tensor):
//     %t : bool = prim::Constant[value=1]()
//
// Methods and functions are inlined; every parameter and buffer reached
// through `self` becomes a graph input named by its state_dict key (inputs
// keep the order of named_parameters(), then named_buffers()); non-tensor
// attributes, the training flag included, are folded to constants. In-place
// updates of buffers (batch norm's running statistics, num_batches_tracked)
// stay as the side effects they are: the runtime passes the module's own
// buffers. Attribute assignment (prim::SetAttr) and any other use of a module
// value are rejected. A graph that has no module (graph text) is left alone.
#include <torch/csrc/jit/passes/inliner.h>

#include <unordered_map>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/pass.h"

namespace actnn {
namespace {

using torch::jit::Node;
using torch::jit::Value;

// What the IR holds as a constant: scalars, strings, devices, enums, and
// tuples, lists and dicts of them (torchvision's IntermediateLayerGetter keeps
// a Dict[str, str] of the layers it returns; timm an Enum of its output
// format). Forward's reads of them then fold (canonicalize's constant
// propagation: `name in self.return_layers`, `self.return_layers[name]`).
bool isConstantAttribute(const c10::IValue& v) {
  if (v.isNone() || v.isInt() || v.isDouble() || v.isBool() || v.isString() || v.isDevice() || v.isEnum())
    return true;
  if (v.isIntList() || v.isDoubleList() || v.isBoolList()) return true;
  if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements())
      if (!isConstantAttribute(e)) return false;
    return true;
  }
  if (v.isList()) {
    for (const auto& e : v.toListRef())
      if (!isConstantAttribute(e)) return false;
    return true;
  }
  if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict())
      if (!isConstantAttribute(kv.key()) || !isConstantAttribute(kv.value())) return false;
    return true;
  }
  return false;
}

// The first node that writes `v` (a list or dict attribute) in place, or
// null: folding such an attribute to a constant would drop the write, which
// the module keeps from one call to the next.
Node* writerOf(Value* v) {
  for (const auto& use : v->uses())
    if (writesOperand(use)) return use.user;
  return nullptr;
}

class LowerModule : public Pass {
 public:
  bool run(TrainingIR& ir, Diagnostics& diag) override {
    if (ir.lowered || !ir.module) return false;
    auto& graph = *ir.graph;
    torch::jit::Inline(graph);
    const auto& module = *ir.module;

    // state_dict order for the lifted inputs.
    std::unordered_map<std::string, std::pair<size_t, InputRole>> order;
    std::unordered_map<std::string, bool> requires_grad;
    size_t rank = 0;
    for (const auto& p : module.named_parameters(/*recurse=*/true)) {
      order.emplace(p.name, std::make_pair(rank++, InputRole::Parameter));
      requires_grad[p.name] = p.value.requires_grad();
    }
    for (const auto& b : module.named_buffers(/*recurse=*/true))
      order.emplace(b.name, std::make_pair(rank++, InputRole::Buffer));

    std::vector<InputInfo> infos;
    const auto& schema = module.get_method(ir.method).function().getSchema();
    Value* self = graph.inputs()[0];
    for (size_t i = 1; i < graph.inputs().size(); ++i) {
      Value* in = graph.inputs()[i];
      InputInfo info;
      // The name in forward()'s signature ("x"), not the graph's ("x.1").
      info.name = i < schema.arguments().size() ? schema.arguments()[i].name()
                  : in->hasDebugName()          ? in->debugName()
                                                : "input" + std::to_string(i - 1);
      // A tensor input needs a gradient unless its type says it is not
      // floating point (ONNX inputs carry their element type).
      auto tensor = in->type()->cast<c10::TensorType>();
      info.requires_grad = tensor && (!tensor->scalarType() || at::isFloatingType(*tensor->scalarType()));
      infos.push_back(info);
    }
    const size_t num_user = infos.size();

    std::unordered_map<std::string, Value*> lifted;
    lift(self, module._ivalue(), "", graph, order, requires_grad, lifted, infos, diag);
    if (diag.hasErrors()) return false;
    graph.eraseInput(0);

    // Put the lifted inputs in state_dict order; unknown attributes last.
    std::vector<size_t> perm(num_user);
    for (size_t i = 0; i < num_user; ++i) perm[i] = i;
    std::vector<size_t> rest;
    for (size_t i = num_user; i < infos.size(); ++i) rest.push_back(i);
    auto key = [&](size_t i) {
      auto it = order.find(infos[i].name);
      return it == order.end() ? rank : it->second.first;
    };
    std::stable_sort(rest.begin(), rest.end(), [&](size_t a, size_t b) { return key(a) < key(b); });
    perm.insert(perm.end(), rest.begin(), rest.end());
    graph.block()->permuteInputs(perm);
    std::vector<InputInfo> sorted;
    for (size_t i : perm) sorted.push_back(infos[i]);
    ir.inputs = std::move(sorted);

    for (const auto& m : module.named_modules()) ir.training_flags.emplace_back(m.name, m.value.is_training());
    ir.lowered = true;
    return true;
  }

 private:
  void lift(Value* object, const c10::intrusive_ptr<c10::ivalue::Object>& obj, const std::string& prefix,
            torch::jit::Graph& graph,
            const std::unordered_map<std::string, std::pair<size_t, InputRole>>& order,
            const std::unordered_map<std::string, bool>& requires_grad,
            std::unordered_map<std::string, Value*>& lifted, std::vector<InputInfo>& infos,
            Diagnostics& diag) {
    const auto uses = object->uses();
    for (const auto& use : uses) {
      Node* n = use.user;
      if (n->kind() == c10::prim::SetAttr) {
        diag.error(n, "assignment to module attribute '" + prefix + n->s(c10::attr::name) +
                          "' in forward is not supported (only in-place updates of buffers are)");
        continue;
      }
      if (n->kind() != c10::prim::GetAttr) {
        diag.error(n, "module value '" + (prefix.empty() ? std::string("self") : prefix.substr(0, prefix.size() - 1)) +
                          "' is used by " + n->kind().toQualString() +
                          "; only attribute reads of modules can be lowered");
        continue;
      }
      const std::string name = n->s(c10::attr::name);
      const std::string path = prefix + name;
      c10::IValue value = obj->getAttr(name);
      Value* out = n->output();
      if (value.isObject()) {
        lift(out, value.toObject(), path + ".", graph, order, requires_grad, lifted, infos, diag);
        if (!out->hasUses()) n->destroy();
        continue;
      }
      if (value.isTensor()) {
        auto it = lifted.find(path);
        if (it == lifted.end()) {
          Value* input = graph.addInput(path);
          input->setType(out->type()->cast<c10::OptionalType>() ? c10::TensorType::get() : out->type());
          InputInfo info;
          info.name = path;
          auto o = order.find(path);
          info.role = o == order.end() ? InputRole::Buffer : o->second.second;
          auto rg = requires_grad.find(path);
          info.requires_grad = rg != requires_grad.end() && rg->second;
          info.rank = value.toTensor().dim();
          infos.push_back(info);
          it = lifted.emplace(path, input).first;
        }
        out->replaceAllUsesWith(it->second);
        n->destroy();
        continue;
      }
      if (isConstantAttribute(value)) {
        if (value.isList() || value.isGenericDict()) {
          if (Node* writer = writerOf(out)) {
            diag.error(writer, "forward modifies attribute '" + path + "' of type " + out->type()->repr_str() +
                                   " (" + writer->kind().toQualString() +
                                   "); only attributes that forward reads can be lowered");
            continue;
          }
        }
        torch::jit::WithInsertPoint guard(n);
        Value* c = graph.insertConstant(value);
        if (value.isNone()) c->setType(c10::NoneType::get());
        out->replaceAllUsesWith(c);
        n->destroy();
        continue;
      }
      diag.error(n, "attribute '" + path + "' of type " + out->type()->repr_str() +
                        " cannot be lowered (tensors, modules and constants can)");
    }
  }
};

}  // namespace

std::unique_ptr<Pass> createLowerModulePass() { return std::make_unique<LowerModule>(); }

}  // namespace actnn
