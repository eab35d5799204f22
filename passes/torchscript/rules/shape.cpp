// Views, reshapes, padding (constant, reflection, replication, circular),
// roll, flip, repeat_interleave, index_select, advanced indexing (index,
// index_put), writes into slices (slice_scatter, select_scatter),
// concatenation, stacking and splitting. Gradients of tensor lists are lists
// in B: ListConstruct's backward unpacks them, ListUnpack's builds one (zeros
// for outputs that get no gradient), cat splits, chunk/split/tensor_split cat,
// stack unbinds, broadcast_tensors sums each gradient back. Only sizes and
// index tensors are saved, never the tensors.
#include "rules.h"

namespace actnn {
namespace rules {
namespace {

Value* reshapeBack(RuleContext& c) {
  return c.op(c10::aten::reshape, {c.grad(0), c.saveSizes(c.input(0))});
}

// The Tensor?[] indices of index / index_put (a list built in F) rebuilt in
// B from the saved index tensors.
Value* savedIndices(RuleContext& c, const char* op) {
  Node* list = c.input(1)->node();
  TORCH_CHECK(list->kind() == c10::prim::ListConstruct, op, ": the indices must be a list built in forward");
  std::vector<Value*> indices;
  for (Value* v : list->inputs()) indices.push_back(v->type()->kind() == c10::TypeKind::NoneType ? c.none() : c.save(v));
  Graph& b = c.backward();
  return b.insertNode(b.createList(c10::OptionalType::ofTensor(), indices))->output();
}

}  // namespace

void registerShapeRules(std::vector<RuleSpec>& rules) {
  using namespace c10;
  for (const char* op : {"aten::flatten.using_ints", "aten::view", "aten::reshape", "aten::squeeze",
                         "aten::unsqueeze", "aten::unflatten.int"})
    rules.push_back({op, nullptr, [](RuleContext& c) { c.setGrad(0, reshapeBack(c)); }});
  rules.push_back({"aten::contiguous", nullptr, [](RuleContext& c) { c.setGrad(0, c.grad(0)); }});
  rules.push_back({"aten::clone", nullptr, [](RuleContext& c) { c.setGrad(0, c.grad(0)); }});
  rules.push_back({"aten::permute", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.helper("permute_backward", {c.grad(0), c.save(c.input(1))}));
  }});
  rules.push_back({"aten::transpose.int", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::transpose, {c.grad(0), c.save(c.input(1)), c.save(c.input(2))}));
  }});
  rules.push_back({"aten::t", nullptr, [](RuleContext& c) { c.setGrad(0, c.op(aten::t, {c.grad(0)})); }});
  for (const char* op : {"aten::expand", "aten::expand_as"})
    rules.push_back({op, nullptr, [](RuleContext& c) {
      c.setGrad(0, c.op(aten::sum_to_size, {c.grad(0), c.saveSizes(c.input(0))}));
    }});
  rules.push_back({"aten::select.int", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::select_backward, {c.grad(0), c.saveSizes(c.input(0)), c.save(c.input(1)),
                                               c.save(c.input(2))}));
  }});
  rules.push_back({"aten::slice.Tensor", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.helper("slice_backward", {c.grad(0), c.saveSizes(c.input(0)), c.save(c.input(1)),
                                             c.save(c.input(2)), c.save(c.input(3)), c.save(c.input(4))}));
  }});
  // Writes into a slice / select of a copy (canonicalize makes them from
  // zero_, fill_ and copy_ through a view): self's gradient is the output's
  // with the written part zeroed; src's is that part.
  for (bool slice : {true, false}) {
    rules.push_back({slice ? "aten::slice_scatter" : "aten::select_scatter", nullptr, [slice](RuleContext& c) {
      Node* n = c.node();
      std::vector<NamedValue> where;  // dim, start, end, step | dim, index
      for (size_t i = 2; i < n->inputs().size(); ++i) where.emplace_back(c.save(n->input(i)));
      if (c.needsGrad(0)) {
        std::vector<NamedValue> args{c.grad(0), c.saveShapeOnly(c.input(1))};
        args.insert(args.end(), where.begin(), where.end());
        c.setGrad(0, c.op(slice ? aten::slice_scatter : aten::select_scatter, args));
      }
      if (c.needsGrad(1)) {
        std::vector<NamedValue> args{c.grad(0)};
        args.insert(args.end(), where.begin(), where.end());
        c.setGrad(1, c.op(slice ? aten::slice : aten::select, args));
      }
    }});
  }
  rules.push_back({"aten::index_select", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::index_select_backward, {c.grad(0), c.saveSizes(c.input(0)), c.save(c.input(1)),
                                                     c.save(c.input(2))}));
  }});
  // Advanced indexing: the gradient scatters back into zeros of the input's
  // sizes, summing where an index repeats (index_put with accumulate, as
  // autograd does). The index tensors and the input's sizes are saved.
  rules.push_back({"aten::index.Tensor", nullptr,
                   [](RuleContext& c) {
                     if (!c.needsGrad(0)) return;
                     Value* zeros = c.op(aten::new_zeros, {c.grad(0), c.saveSizes(c.input(0))});
                     c.setGrad(0, c.op(aten::index_put,
                                       {zeros, savedIndices(c, "aten::index"), c.grad(0), c.constant(true)}));
                   },
                   [](const Node* n) -> std::string {
                     return n->input(1)->node()->kind() == prim::ListConstruct ? ""
                                                                               : "the indices are not a list built in forward";
                   }});
  // index_put(self, indices, values, accumulate): self keeps the gradient
  // except where values were written (accumulate: everywhere); values get
  // the gradient read at the indices, summed back to their shape.
  rules.push_back({"aten::index_put", nullptr,
                   [](RuleContext& c) {
                     Value* indices = savedIndices(c, "aten::index_put");
                     if (c.needsGrad(0)) {
                       const bool accumulate = torch::jit::toIValue(c.input(3))->toBool();
                       c.setGrad(0, accumulate ? c.grad(0)
                                               : c.op(aten::index_put, {c.grad(0), indices,
                                                                        c.saveShapeOnly(c.input(2)), c.constant(false)}));
                     }
                     if (c.needsGrad(2))
                       c.setGrad(2, c.op(aten::sum_to_size,
                                         {c.op(aten::index, {c.grad(0), indices}), c.saveSizes(c.input(2))}));
                   },
                   [](const Node* n) -> std::string {
                     if (n->input(1)->node()->kind() != prim::ListConstruct) return "the indices are not a list built in forward";
                     return needsConstant(3, "accumulate")(n);
                   }});
  // roll is undone by rolling back (the shifts negated in B, so they may be
  // computed values).
  rules.push_back({"aten::roll", nullptr, [](RuleContext& c) {
    if (!c.needsGrad(0)) return;
    c.setGrad(0, c.helper("roll_backward", {c.grad(0), c.save(c.input(1)), c.save(c.input(2))}));
  }});
  // flip is its own inverse.
  rules.push_back({"aten::flip", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::flip, {c.grad(0), c.save(c.input(1))}));
  }});
  // Padding is undone by padding with the negated widths (a slice).
  rules.push_back({"aten::constant_pad_nd", nullptr, [](RuleContext& c) {
    auto pad = torch::jit::toIValue(c.input(1));
    if (!pad) {  // computed from sizes (Swin's pad to the window): negated in B
      c.setGrad(0, c.helper("pad_backward", {c.grad(0), c.save(c.input(1))}));
      return;
    }
    std::vector<int64_t> negated = pad->toIntVector();
    for (int64_t& p : negated) p = -p;
    c.setGrad(0, c.op(aten::constant_pad_nd, {c.grad(0), c.constant(negated), c.constant(0)}));
  }});
  rules.push_back({"prim::ListConstruct", nullptr, [](RuleContext& c) {
    Node* n = c.node();
    Node* unpack = c.backward().insertNode(c.backward().create(prim::ListUnpack, {c.grad(0)}, n->inputs().size()));
    for (size_t i = 0; i < n->inputs().size(); ++i) {
      unpack->output(i)->setType(TensorType::get());
      c.setGrad(i, unpack->output(i));
    }
  }});
  rules.push_back({"prim::ListUnpack", nullptr, [](RuleContext& c) {
    Node* n = c.node();
    std::vector<Value*> grads;
    for (size_t i = 0; i < n->outputs().size(); ++i) grads.push_back(c.gradOrZeros(i));
    Node* list = c.backward().insertNode(c.backward().createList(TensorType::get(), grads));
    c.setGrad(0, list->output());
  }});
  rules.push_back({"aten::cat", nullptr, [](RuleContext& c) {
    Node* list = c.input(0)->node();
    Value* dim = c.input(1);
    std::vector<Value*> sizes;
    if (list->kind() == prim::ListConstruct) {
      for (Value* t : list->inputs()) sizes.push_back(c.save(c.forwardOp(aten::size, {t, dim})));
    }
    if (sizes.empty() && list->kind() != prim::ListConstruct) {
      TORCH_CHECK(false, "aten::cat of a list that is not built in the graph is not differentiable");
    }
    Node* sizes_list = c.backward().insertNode(c.backward().createList(IntType::get(), sizes));
    c.setGrad(0, c.op(aten::split_with_sizes, {c.grad(0), sizes_list->output(), c.save(dim)}));
  },
                   [](const Node* n) -> std::string {
                     return n->input(0)->node()->kind() == prim::ListConstruct ? "" : "the list is not built in forward";
                   }});
  auto catBack = [](RuleContext& c) {
    Node* n = c.node();
    Value* dim = n->inputs().size() > 2 ? c.save(n->input(2)) : c.constant(int64_t{0});
    c.setGrad(0, c.op(aten::cat, {c.grad(0), dim}));
  };
  rules.push_back({"aten::chunk", nullptr, catBack});
  rules.push_back({"aten::split.Tensor", nullptr, catBack});
  rules.push_back({"aten::split.sizes", nullptr, catBack});
  rules.push_back({"aten::split_with_sizes", nullptr, catBack});
  // tensor_split's pieces cover the input in order, as split's do.
  rules.push_back({"aten::tensor_split.sections", nullptr, catBack});
  rules.push_back({"aten::tensor_split.indices", nullptr, catBack});
  // stack: the gradient unbound along dim is the list of the inputs'.
  rules.push_back({"aten::stack", nullptr, [](RuleContext& c) {
    Value* grads = c.op(aten::unbind, {c.grad(0), c.save(c.input(1))});
    grads->setType(ListType::ofTensors());
    c.setGrad(0, grads);
  }});
  // repeat_interleave by a constant count: the copies of each element sum.
  rules.push_back({"aten::repeat_interleave.self_int", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.helper("repeat_interleave_backward",
                          {c.grad(0), c.saveSizes(c.input(0)), c.save(c.input(1)), c.save(c.input(2))}));
  }});
  // Reflection and replication padding: ATen's backward ops, which read
  // only the input's sizes; circular padding folds the wrapped borders back.
  for (const char* mode : {"reflection", "replication"})
    for (int d = 1; d <= 3; ++d) {
      const std::string op = std::string("aten::") + mode + "_pad" + std::to_string(d) + "d";
      const auto backward = Symbol::fromQualString(op + "_backward");
      rules.push_back({op, nullptr, [backward](RuleContext& c) {
        c.setGrad(0, c.op(backward, {c.grad(0), c.saveShapeOnly(c.input(0)), c.save(c.input(1))}));
      }});
    }
  rules.push_back({"aten::_pad_circular", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.helper("pad_circular_backward", {c.grad(0), c.save(c.input(1))}));
  }});
  rules.push_back({"aten::unbind.int", nullptr, [](RuleContext& c) {
    c.setGrad(0, c.op(aten::stack, {c.grad(0), c.save(c.input(1))}));
  }});
  // What F.mse_loss does to its operands: each gradient is summed back to
  // its operand's shape.
  rules.push_back({"aten::broadcast_tensors", nullptr, [](RuleContext& c) {
    Node* list = c.input(0)->node();
    TORCH_CHECK(list->kind() == prim::ListConstruct,
                "aten::broadcast_tensors of a list that is not built in the graph is not differentiable");
    Graph& b = c.backward();
    Node* unpack = b.insertNode(b.create(prim::ListUnpack, {c.grad(0)}, list->inputs().size()));
    std::vector<Value*> grads;
    for (size_t i = 0; i < list->inputs().size(); ++i) {
      unpack->output(i)->setType(TensorType::get());
      grads.push_back(c.op(aten::sum_to_size, {unpack->output(i), c.saveSizes(list->input(i))}));
    }
    c.setGrad(0, b.insertNode(b.createList(TensorType::get(), grads))->output());
  }});
}

}  // namespace rules
}  // namespace actnn
