#include "actnn/passes/ir_builder.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <mutex>

#include <torch/custom_class.h>

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/jit.h>

namespace actnn {

using torch::jit::Node;
using torch::jit::Value;

Node* insertOp(torch::jit::Graph& graph, c10::Symbol kind, const std::vector<torch::jit::NamedValue>& args,
               const c10::optional<torch::jit::SourceRange>& range,
               const std::vector<torch::jit::NamedValue>& kwargs) {
  Value* packed = graph.insert(kind, args, kwargs, range);
  Node* n = packed->node();
  if (n->kind() == c10::prim::TupleConstruct && n->inputs().size() > 0 &&
      n->input(0)->node()->kind() == kind) {
    Node* op = n->input(0)->node();
    n->destroy();
    n = op;
  }
  if (range) n->setSourceRange(*range);
  return n;
}

Value* insertValue(torch::jit::Graph& graph, c10::Symbol kind, const std::vector<torch::jit::NamedValue>& args,
                   const c10::optional<torch::jit::SourceRange>& range,
                   const std::vector<torch::jit::NamedValue>& kwargs) {
  Node* n = insertOp(graph, kind, args, range, kwargs);
  TORCH_INTERNAL_ASSERT(n->outputs().size() == 1, kind.toQualString(), " has several outputs");
  return n->output();
}

c10::optional<c10::IValue> constantOf(const Value* v) { return torch::jit::toIValue(v); }

c10::optional<int64_t> constantInt(const Value* v) {
  auto c = constantOf(v);
  return c && c->isInt() ? c10::optional<int64_t>(c->toInt()) : c10::nullopt;
}

bool sizesReadValues(const Node* n) {
  static const char* const kNames[] = {"nonzero", "nonzero_numpy", "argwhere", "masked_select", "unique",
                                       "_unique", "_unique2", "unique_consecutive", "unique_dim",
                                       "repeat_interleave", "bincount", "index", "index_put", "index_put_",
                                       "histc", "multinomial", "masked_scatter"};
  const std::string name = n->kind().toUnqualString();
  for (const char* k : kNames)
    if (name == k) return true;
  return name == "where" && n->inputs().size() == 1;  // where(cond) is nonzero; where(c, a, b) broadcasts
}

c10::IValue standIn(const c10::IValue& v, bool to_meta) {
  if (v.isTensor()) {
    const at::Tensor& t = v.toTensor();
    if (to_meta) return t.is_meta() ? t : at::empty(t.sizes(), t.options().device(at::kMeta));
    return t.is_meta() ? at::zeros(t.sizes(), t.options().device(at::kCPU)) : t;
  }
  if (v.isTensorList()) {
    c10::List<at::Tensor> out;
    for (const at::Tensor& t : v.toTensorVector()) out.push_back(standIn(t, to_meta).toTensor());
    return out;
  }
  if (v.isTuple()) {
    std::vector<c10::IValue> out;
    for (const auto& e : v.toTupleRef().elements()) out.push_back(standIn(e, to_meta));
    return c10::ivalue::Tuple::create(std::move(out));
  }
  return v;
}

bool runOnStandIns(Node* n, const std::vector<c10::IValue>& inputs, torch::jit::Stack& results) {
  auto run = [&](bool meta) {
    results.clear();
    for (const auto& v : inputs) {
      c10::IValue x = standIn(v, meta);
      // A copy (free for a meta tensor): an in-place op must not write the
      // stand-in of a value other uses read too.
      if (meta && x.isTensor()) x = x.toTensor().clone();
      results.push_back(std::move(x));
    }
    try {
      n->getOperation()(results);
    } catch (const std::exception&) {
      return false;
    }
    for (auto& r : results) r = standIn(r, /*to_meta=*/true);
    return results.size() == n->outputs().size();
  };
  if (run(true)) return true;
  const auto outs = n->outputs();
  const bool returns_tensors = std::all_of(outs.begin(), outs.end(), [](const Value* o) {
    return o->type()->kind() == c10::TypeKind::TensorType;
  });
  return returns_tensors && !sizesReadValues(n) && run(false);
}

bool returnsAlias(const Node* n) {
  const auto* schema = n->maybeSchema();
  if (!schema || schema->returns().empty() || schema->arguments().empty()) return false;
  const auto& ret = schema->returns()[0].alias_info();
  return ret && !ret->isWrite();
}

bool writesOperand(const torch::jit::Use& use) {
  const c10::FunctionSchema* schema = use.user->maybeSchema();
  if (!schema || use.offset >= schema->arguments().size()) return false;
  const auto* alias = schema->arguments()[use.offset].alias_info();
  return alias && alias->isWrite();
}

bool carriesTensors(const c10::TypePtr& t) {
  if (t->isSubtypeOf(*c10::TensorType::get())) return true;
  for (const auto& c : t->containedTypes())
    if (carriesTensors(c)) return true;
  return false;
}

std::vector<Value*> viewFamily(Value* v) {
  Value* base = v;
  while (returnsAlias(base->node())) base = base->node()->input(0);
  std::vector<Value*> family{base};
  for (size_t i = 0; i < family.size(); ++i)
    for (const auto& use : family[i]->uses())
      if (use.offset == 0 && returnsAlias(use.user)) family.push_back(use.user->output());
  return family;
}

void forEachNode(torch::jit::Block* block, const std::function<void(Node*)>& f) {
  for (auto it = block->nodes().begin(); it != block->nodes().end();) {
    Node* n = *it;
    ++it;
    for (auto* b : n->blocks()) forEachNode(b, f);
    f(n);
  }
}

std::string identifier(const std::string& name) {
  std::string out;
  for (char ch : name) out += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  if (out.empty() || std::isdigit(static_cast<unsigned char>(out[0]))) out = "v" + out;
  return out;
}

c10::Symbol actnnOp(const char* name) { return c10::Symbol::fromQualString(std::string("actnn::") + name); }

c10::TypePtr actnnClass(const char* name) {
  auto type = torch::getCustomClass(std::string("__torch__.torch.classes.actnn.") + name);
  TORCH_INTERNAL_ASSERT(type, "the actnn runtime (", name, ") is not registered");
  return type;
}

torch::jit::Node* topLevelNode(torch::jit::Node* n, torch::jit::Block* top) {
  while (n->owningBlock() != top) n = n->owningBlock()->owningNode();
  return n;
}

torch::jit::Node* replaceNode(torch::jit::Node* node, torch::jit::Graph& graph, c10::Symbol kind,
                              const std::vector<torch::jit::NamedValue>& args) {
  torch::jit::WithInsertPoint guard(node);
  torch::jit::Node* n = insertOp(graph, kind, args, node->sourceRange());
  TORCH_INTERNAL_ASSERT(n->outputs().size() >= node->outputs().size());
  for (size_t i = 0; i < node->outputs().size(); ++i) {
    n->output(i)->setType(node->output(i)->type());
    node->output(i)->replaceAllUsesWith(n->output(i));
  }
  node->destroy();
  return n;
}

std::shared_ptr<torch::jit::Graph> scriptHelperGraph(const char* source, const std::string& name) {
  static std::mutex mutex;
  static std::map<const char*, std::shared_ptr<torch::jit::CompilationUnit>> units;
  std::lock_guard<std::mutex> lock(mutex);
  auto& unit = units[source];
  if (!unit) unit = torch::jit::compile(source);
  auto graph = torch::jit::toGraphFunction(unit->get_function(name)).graph()->copy();
  torch::jit::Inline(*graph);
  return graph;
}

}  // namespace actnn
