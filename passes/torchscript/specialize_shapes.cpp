// specialize-shapes{shapes=x:2x3x224x224;y:2}: the program specialized to its
// inputs' sizes, so that control flow which depends only on sizes, ranks and
// dtypes folds before autodiff (which cannot differentiate through it).
//
//   graph(%x : Tensor, %w : Tensor):              graph(%x : Float(2, 3, 8, 8), %w : Float(4, 3, 3, 3)):
//     %r : int = aten::dim(%x)                      %c = aten::convolution(%x, %w, ...)
//     %four : bool = aten::eq(%r, 4)                return (%c)
//     %y = prim::If(%four)
//       block0(): -> (aten::convolution(%x, %w, ...))
//       block1(): -> (prim::RaiseException(...))
//
// The named inputs get complete types (their sizes; their dtype, float32 when
// the graph does not say); parameters and buffers get the module's. Then,
// until nothing changes: every op whose inputs are all known runs on meta
// tensors (sizes and dtypes, no data; an op without a meta kernel on CPU zeros
// of those sizes), tensor results get typed and non-tensor results (sizes,
// ranks, comparisons) become constants; constant propagation
// then folds the branches and loops they decide, which makes more values
// known; canonicalize runs in the same loop (its rewrites of inlined branches
// make more values known). A list or dict written in place is never known.
// Nothing that reads tensor data is folded: the ops that return it as a
// non-tensor (item, Bool / Int of a tensor, equal, ...) are never evaluated,
// and ops whose result sizes depend on data (nonzero, masked_select, boolean
// indexing, ...) only on meta tensors, where they fail.
// Devices are not specialized (prim::device, is_cuda and the like stay).
//
// The compiled module is then valid only for these sizes: buildTrainingModule
// puts a guard in the training forward that raises, naming the input and both
// shapes, when a call brings other sizes or another dtype (ir.specialized).
// Left alone: loops whose trip count stays unknown (their bodies are not
// entered), and per-signature recompilation at run time (a new signature
// needs a new compile).
#include <ATen/ATen.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/peephole.h>
#include <torch/csrc/jit/runtime/operator.h>

#include <algorithm>
#include <sstream>
#include <unordered_map>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/pass.h"
#include "actnn/passes/registry.h"
#include "actnn/runtime/training.h"

namespace actnn {
namespace {

using torch::jit::Block;
using torch::jit::Node;
using torch::jit::Value;

c10::TypePtr completeType(at::ScalarType dtype, at::IntArrayRef sizes) {
  return c10::TensorType::get()->withScalarType(dtype)->withSizes(sizes.vec());
}

// One input's entry of the shapes option.
struct ShapeEntry {
  std::string name;
  std::vector<int64_t> sizes;
  c10::optional<at::ScalarType> dtype;  // absent: the graph's, else float32
};

// "x:2x3x8x8;ids:2x16:int64" -> {x: [2, 3, 8, 8], ids: [2, 16] int64}, in
// order (the syntax of the runtime's signatureText; a rank-0 input is "s::").
std::vector<ShapeEntry> parseShapes(const std::string& text, Diagnostics& diag) {
  std::vector<ShapeEntry> out;
  std::stringstream entries(text);
  std::string entry;
  while (std::getline(entries, entry, ';')) {
    const size_t colon = entry.find(':');
    if (colon == std::string::npos || colon == 0) {
      diag.error("option shapes: '" + entry + "' is not NAME:DIMxDIM...[:DTYPE]");
      continue;
    }
    ShapeEntry parsed;
    parsed.name = entry.substr(0, colon);
    std::string dims_text = entry.substr(colon + 1);
    const size_t dtype_colon = dims_text.find(':');
    if (dtype_colon != std::string::npos) {
      const std::string dtype = dims_text.substr(dtype_colon + 1);
      parsed.dtype = dtypeNamed(dtype);
      if (!parsed.dtype) {
        diag.error("option shapes: '" + entry + "' names dtype '" + dtype +
                   "' (dtypes: float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8, bool)");
        continue;
      }
      dims_text.resize(dtype_colon);
    }
    std::stringstream dims(dims_text);
    std::string dim;
    bool ok = true;
    while (std::getline(dims, dim, 'x')) {
      size_t used = 0;
      long long v = -1;
      try {
        v = std::stoll(dim, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != dim.size() || v < 0) ok = false;
      parsed.sizes.push_back(v);
    }
    if (!ok) {
      diag.error("option shapes: '" + entry + "' has a size that is not a non-negative integer");
      continue;
    }
    out.push_back(std::move(parsed));
  }
  return out;
}

// Ops whose result a meta tensor cannot stand for: where a tensor lives, its
// data (some return a plausible answer on meta instead of failing), its
// identity or autograd state, and the process's modes.
bool notSpecialized(const Node* n) {
  static const char* const kNames[] = {
      "device", "is_cuda", "is_cpu", "is_mkldnn", "is_xpu", "is_meta", "get_device", "is_quantized",
      "is_sparse", "is_vulkan", "is_mps", "equal", "allclose", "is_nonzero", "item", "_local_scalar_dense",
      "Bool", "Int", "Float", "Scalar", "ScalarImplicit", "__is__", "__isnot__", "data_ptr", "_version",
      "is_set_to", "is_leaf", "requires_grad", "output_nr", "is_grad_enabled", "is_autocast_enabled"};
  const std::string name = n->kind().toUnqualString();
  for (const char* k : kNames)
    if (name == k) return true;
  for (const Value* o : n->outputs())
    if (o->type()->kind() == c10::TypeKind::DeviceObjType) return true;
  return n->inputs().empty();
}

// An op that writes one of its inputs in place; with `containers`, only a
// list or dict input counts.
bool writesInput(const Node* n, bool containers = false) {
  const c10::FunctionSchema* schema = n->maybeSchema();
  if (!schema) return false;
  for (size_t i = 0; i < schema->arguments().size() && i < n->inputs().size(); ++i) {
    const auto& arg = schema->arguments()[i];
    if (!arg.alias_info() || !arg.alias_info()->isWrite()) continue;
    const auto kind = n->input(i)->type()->kind();
    if (!containers || kind == c10::TypeKind::ListType || kind == c10::TypeKind::DictType) return true;
  }
  return false;
}

// Some use of v writes it in place (l[0] = 0 on a copied list): a constant in
// its place would be written, and constants are shared.
bool written(const Value* v) {
  const auto& uses = v->uses();
  return std::any_of(uses.begin(), uses.end(), writesOperand);
}

class Evaluator {
 public:
  explicit Evaluator(torch::jit::Graph& graph) : graph_(graph) {}

  // One sweep over `block` (If branches included, loop bodies not).
  bool sweep(Block* block) {
    bool changed = false;
    for (auto it = block->nodes().begin(); it != block->nodes().end();) {
      Node* n = *it++;
      if (n->kind() == c10::prim::If) {
        for (Block* b : n->blocks()) changed |= sweep(b);
        continue;
      }
      changed |= evaluate(n);
    }
    return changed;
  }

 private:
  // v's value on meta tensors, when known.
  c10::optional<c10::IValue> known(Value* v) {
    if (auto c = torch::jit::toIValue(v)) return c;
    auto it = known_.find(v);
    if (it != known_.end()) return it->second;
    auto t = v->type()->cast<c10::TensorType>();
    if (!t || !t->scalarType()) return c10::nullopt;
    auto sizes = t->sizes().concrete_sizes();
    if (!sizes) return c10::nullopt;
    c10::IValue meta = at::empty(*sizes, at::TensorOptions().dtype(*t->scalarType()).device(at::kMeta));
    known_.emplace(v, meta);
    return meta;
  }

  bool evaluate(Node* n) {
    // A tensor's device stands for itself: known as meta, so that tensors
    // made `device=x.device` (stochastic depth's noise) get typed, but never
    // folded into the program.
    if (n->kind() == c10::prim::device && n->inputs().size() == 1) {
      if (known(n->input(0))) known_[n->output()] = c10::IValue(c10::Device(at::kMeta));
      return false;
    }
    const bool prim_ok = n->kind() == c10::prim::ListConstruct || n->kind() == c10::prim::TupleConstruct ||
                         n->kind() == c10::prim::ListUnpack || n->kind() == c10::prim::TupleUnpack ||
                         n->kind() == c10::prim::TupleIndex || n->kind() == c10::prim::dtype;
    if (!(n->kind().is_aten() || prim_ok) || !n->blocks().empty() || notSpecialized(n)) return false;
    // A list or dict written in place: the known value would be written too.
    if (writesInput(n, /*containers=*/true)) return false;
    if (n->outputs().empty()) return false;
    const auto outs = n->outputs();
    if (std::all_of(outs.begin(), outs.end(), [&](Value* o) { return known_.count(o) || torch::jit::toIValue(o); }))
      return false;  // evaluated in an earlier sweep
    std::vector<c10::IValue> inputs;
    for (Value* in : n->inputs()) {
      auto v = known(in);
      if (!v) return false;
      inputs.push_back(*v);
    }
    if (!n->maybeOperator() && !prim_ok) return false;
    // Variadic ops (format: error messages) run only inside the interpreter,
    // which passes their argument count.
    if (n->maybeSchema() && (n->maybeSchema()->is_vararg() || n->kind() == c10::aten::format)) return false;
    // Only tensors may come from the stand-in device (a comparison with it
    // would fold a wrong answer).
    for (const auto& v : inputs)
      if (v.isDevice())
        for (const Value* o : n->outputs())
          if (o->type()->kind() != c10::TypeKind::TensorType) return false;
    if (n->kind() != c10::prim::dtype && prim_ok) return containers(n, inputs);
    if (auto repeated = repeatInterleaveBy(n, inputs)) return record(n, n->output(), *repeated);
    // On stand-ins (ir_builder.h: meta tensors, or CPU zeros for an op
    // without a meta kernel); results are kept as meta tensors.
    torch::jit::Stack stack;
    if (!runOnStandIns(n, inputs, stack)) return false;
    if (stack.size() != n->outputs().size()) return false;
    bool changed = false;
    for (size_t i = 0; i < n->outputs().size(); ++i) changed |= record(n, n->outputs()[i], stack[i]);
    return changed;
  }

  // repeat_interleave(x, int repeats, dim) on a meta x, by its shape rule:
  // LibTorch 1.13's meta kernel for it is Python's, which raises without an
  // output_size and, in a Python process, leaves Python's error indicator
  // set after the exception is caught here (Python then fails the call that
  // ran the compiler with a SystemError).
  static c10::optional<c10::IValue> repeatInterleaveBy(const Node* n, const std::vector<c10::IValue>& in) {
    if (n->kind() != c10::aten::repeat_interleave || in.size() < 3 || !in[0].isTensor() || !in[1].isInt())
      return c10::nullopt;
    const at::Tensor& x = in[0].toTensor();
    const int64_t repeats = in[1].toInt();
    if (!x.is_meta() || repeats < 0) return c10::nullopt;
    std::vector<int64_t> sizes = x.sizes().vec();
    if (in[2].isNone()) {
      sizes = {x.numel() * repeats};
    } else if (in[2].isInt() && x.dim() > 0) {
      const int64_t dim = c10::maybe_wrap_dim(in[2].toInt(), x.dim());
      sizes[dim] *= repeats;
    } else {
      return c10::nullopt;
    }
    return c10::IValue(at::empty(sizes, x.options()));
  }

  // Output o of n has the value r (meta tensors): a tensor types o, a value
  // without tensors becomes a constant, a container of tensors is remembered.
  bool record(Node* n, Value* o, const c10::IValue& r) {
    if (r.isTensor()) {
      const at::Tensor& t = r.toTensor();
      auto before = o->type()->cast<c10::TensorType>();
      known_[o] = r;
      if (!before || (before->sizes().concrete_sizes() && before->scalarType())) return false;
      o->setType(completeType(t.scalar_type(), t.sizes())->expectRef<c10::TensorType>().withRequiresGrad(
          before->requiresGrad()));
      return true;
    }
    if (written(o)) return false;  // unknown: its value changes after this node
    if (n->hasSideEffects() || containsTensor(r) || r.isDevice()) {
      known_[o] = r;  // a list or tuple of meta tensors
      return false;
    }
    torch::jit::WithInsertPoint guard(n);
    auto c = torch::jit::tryInsertConstant(graph_, r, n->sourceRange());
    if (!c) {
      known_[o] = r;
      return false;
    }
    (*c)->setType(o->type());
    o->replaceAllUsesWith(*c);
    return true;
  }

  // List and tuple construction and unpacking (no schema, so no operation
  // to run): the known values pass through.
  bool containers(Node* n, const std::vector<c10::IValue>& inputs) {
    std::vector<c10::IValue> outs;
    if (n->kind() == c10::prim::ListConstruct) {
      const auto elem = n->output()->type()->expectRef<c10::ListType>().getElementType();
      if (elem->kind() == c10::TypeKind::TensorType) {
        c10::List<at::Tensor> list;
        for (const auto& v : inputs) list.push_back(v.toTensor());
        outs.emplace_back(list);
      } else {
        c10::impl::GenericList list(elem);
        for (const auto& v : inputs) list.push_back(v);
        outs.emplace_back(list);
      }
    } else if (n->kind() == c10::prim::TupleConstruct) {
      outs.emplace_back(c10::ivalue::Tuple::create(inputs));
    } else if (n->kind() == c10::prim::TupleIndex) {
      const auto& elems = inputs.at(0).toTupleRef().elements();
      const int64_t i = inputs.at(1).toInt();
      if (i < 0 || i >= int64_t(elems.size())) return false;
      outs.push_back(elems[size_t(i)]);
    } else {  // ListUnpack, TupleUnpack
      if (inputs.at(0).isTuple()) {
        const auto& elems = inputs[0].toTupleRef().elements();
        outs.assign(elems.begin(), elems.end());
      } else if (inputs.at(0).isList()) {
        for (const auto& e : inputs[0].toListRef()) outs.push_back(e);
      }
      if (outs.size() != n->outputs().size()) return false;
    }
    bool changed = false;
    for (size_t i = 0; i < outs.size(); ++i) changed |= record(n, n->outputs()[i], outs[i]);
    return changed;
  }

  static bool containsTensor(const c10::IValue& v) {
    if (v.isTensor()) return true;
    if (v.isList()) {
      for (const auto& e : v.toListRef())
        if (containsTensor(e)) return true;
    }
    if (v.isTuple()) {
      for (const auto& e : v.toTupleRef().elements())
        if (containsTensor(e)) return true;
    }
    return false;
  }

  torch::jit::Graph& graph_;
  std::unordered_map<Value*, c10::IValue> known_;
};

class SpecializeShapes : public Pass {
 public:
  SpecializeShapes() {
    options_.declare("shapes", "", "sizes (and dtypes) of the forward inputs, NAME:DIMxDIM...[:DTYPE];NAME:...");
  }

  // The syntax; whether the names are forward inputs of the right rank and
  // dtype is the graph's business (run).
  void checkOptions() const override {
    Diagnostics diag;
    const auto shapes = parseShapes(options_.str("shapes"), diag);
    if (diag.hasErrors()) {
      std::string all;
      for (const auto& e : diag.errors()) all += (all.empty() ? "" : "; ") + e;
      throw CompileError(all);
    }
    if (shapes.empty())
      throw CompileError("option shapes is empty; give the forward inputs' sizes, e.g. shapes=x:2x3x224x224");
  }

  bool run(TrainingIR& ir, Diagnostics& diag) override {
    if (!ir.lowered) {
      diag.error("the module is not lowered yet; run lower-module first");
      return false;
    }
    if (ir.forward) {
      diag.error("autodiff has run; shapes must be specialized before it");
      return false;
    }
    const auto shapes = parseShapes(options_.str("shapes"), diag);  // checked by checkOptions
    torch::jit::Graph& graph = *ir.graph;
    std::string names;
    for (const auto& in : ir.inputs)
      if (in.role == InputRole::Input) names += (names.empty() ? "" : ", ") + in.name;
    for (const auto& [name, sizes, given_dtype] : shapes) {
      size_t i = 0;
      while (i < ir.inputs.size() && !(ir.inputs[i].role == InputRole::Input && ir.inputs[i].name == name)) ++i;
      if (i == ir.inputs.size()) {
        diag.error("option shapes names '" + name + "', which is not a forward input (inputs: " + names + ")");
        continue;
      }
      Value* v = graph.inputs()[i];
      auto t = v->type()->cast<c10::TensorType>();
      if (!t) {
        diag.error("option shapes gives a shape to '" + name + "', of type " + v->type()->repr_str() +
                   "; only tensor inputs have one");
        continue;
      }
      if (t->dim() && *t->dim() != sizes.size()) {
        diag.error("option shapes gives '" + name + "' rank " + std::to_string(sizes.size()) +
                   ", but the graph says rank " + std::to_string(*t->dim()));
        continue;
      }
      if (given_dtype && t->scalarType() && *given_dtype != *t->scalarType()) {
        diag.error("option shapes gives '" + name + "' dtype " + dtypeName(*given_dtype) + ", but the graph says " +
                   dtypeName(*t->scalarType()));
        continue;
      }
      const at::ScalarType dtype = given_dtype ? *given_dtype : t->scalarType().value_or(at::kFloat);
      v->setType(completeType(dtype, sizes)->expectRef<c10::TensorType>().withRequiresGrad(t->requiresGrad()));
      ir.specialized.push_back({name, sizes, dtype});
    }
    if (diag.hasErrors()) return false;
    // Parameters and buffers: the module's own sizes.
    if (ir.module) {
      std::unordered_map<std::string, at::Tensor> state;
      for (const auto& p : ir.module->named_parameters(/*recurse=*/true)) state.emplace(p.name, p.value);
      for (const auto& b : ir.module->named_buffers(/*recurse=*/true)) state.emplace(b.name, b.value);
      for (size_t i = 0; i < ir.inputs.size(); ++i) {
        auto it = state.find(ir.inputs[i].name);
        if (ir.inputs[i].role == InputRole::Input || it == state.end() || !it->second.defined()) continue;
        auto t = graph.inputs()[i]->type()->cast<c10::TensorType>();
        if (!t) continue;
        graph.inputs()[i]->setType(completeType(it->second.scalar_type(), it->second.sizes())
                                       ->expectRef<c10::TensorType>()
                                       .withRequiresGrad(t->requiresGrad()));
      }
    }
    // Random ops run on stand-in data draw from the default generator; the
    // caller's random stream must not depend on whether it compiled.
    struct KeepRandomState {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      at::Tensor state = gen.get_state();
      ~KeepRandomState() { gen.set_state(state); }
    } keep_random_state;
    // Each round can decide a branch whose body makes more values known, and
    // canonicalize's rewrites of that body (a list written in place made
    // functional, in-place ops) can make more known still: so canonicalize
    // runs inside the loop, to a joint fixed point.
    std::unique_ptr<Pass> canonicalize = createPass("canonicalize");
    const int kMaxRounds = 10000;
    for (int round = 0; round < kMaxRounds; ++round) {
      bool changed = Evaluator(graph).sweep(graph.block());
      changed |= torch::jit::ConstantPropagation(ir.graph);
      changed |= torch::jit::PeepholeOptimize(ir.graph);
      torch::jit::EliminateDeadCode(ir.graph);
      changed |= canonicalize->run(ir, diag);
      if (diag.hasErrors()) return false;
      if (!changed) break;
    }
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> createSpecializeShapesPass() { return std::make_unique<SpecializeShapes>(); }

}  // namespace actnn
