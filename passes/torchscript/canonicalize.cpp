// canonicalize: the form autodiff expects.
//
//   %y = aten::relu_(%x)                      %y = aten::relu(%x)
//   %c = aten::conv2d(%x, %w, %b, %s, %p, %d, %g)
//     ->  %c = aten::convolution(%x, %w, %b, %s, %p, %d, false, [0, 0], %g)
//   %m = aten::adaptive_avg_pool2d(%x, [1, 1])
//     ->  %m = aten::mean(%x, [-1, -2], true, None)
//
// Steps, repeated until nothing changes:
//  - in-place ops on activations become functional when no view shares the
//    activation (list mutation through PyTorch's RemoveListMutation, dict
//    item assignment with constant keys by our own), and so do zero_, fill_
//    and copy_ through one slice or select (slice_scatter, select_scatter);
//    in-place updates of buffers (graph inputs) are side effects and stay;
//  - one spelling per op: conv1d/2d/3d, conv_transpose*, _convolution ->
//    convolution; relu6 -> hardtanh; pad -> constant_pad_nd,
//    reflection_pad{1,2,3}d, replication_pad{1,2,3}d or _pad_circular;
//    1x1 adaptive average pooling -> mean (what
//    ATen computes for it); dropout with p = 0 or train = false -> identity;
//    cross_entropy_loss with class targets -> log_softmax + nll_loss_nd;
//    scaled_dot_product_attention and rms_norm -> the ops they compute
//    (matmul, softmax, masked_fill, dropout; pow, mean, rsqrt, mul);
//  - constant propagation, peephole, tuple lowering, dead code elimination;
//  - string folding: an If whose every branch yields a non-empty string makes
//    `not s` false (nn.MultiheadAttention's fast-path test); `a is a` is true;
//  - rank folding: x.dim() when reshape/view/expand/permute fixed the rank and
//    the ops since kept or shifted it (MultiheadAttention's is_batched).
// Option shape-checks=keep|remove: branches that only raise (shape asserts)
// stay in the forward graph by default; `remove` assumes they do not fire.
// Left alone: mutation autodiff cannot see through (it reports it), loops.
#include <torch/csrc/jit/ir/alias_analysis.h>
#include <torch/csrc/jit/passes/constant_pooling.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/loop_unrolling.h>
#include <torch/csrc/jit/passes/lower_tuples.h>
#include <torch/csrc/jit/passes/peephole.h>
#include <torch/csrc/jit/passes/remove_exceptions.h>
#include <torch/csrc/jit/passes/remove_mutation.h>

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/pass.h"

namespace actnn {
namespace {

using torch::jit::Graph;
using torch::jit::NamedValue;
using torch::jit::Node;
using torch::jit::Value;
using torch::jit::WithInsertPoint;

void replace(Node* n, Value* v) {
  n->output()->replaceAllUsesWith(v);
  n->destroy();
}

// Spatial dimensions of a conv op by name.
int convDims(const Node* n) {
  std::string name = n->kind().toUnqualString();
  return name.back() == '1' || name.find("1d") != std::string::npos ? 1
         : name.find("3d") != std::string::npos                    ? 3
                                                                    : 2;
}

bool isConstant(const Value* v, const c10::IValue& expected) {
  auto c = constantOf(v);
  if (!c) return false;
  if (expected.isBool()) return c->isBool() && c->toBool() == expected.toBool();
  if (expected.isDouble())
    return (c->isDouble() || c->isInt()) && c->toScalar().toDouble() == expected.toDouble();
  return false;
}

// 1-d pooling as ATen computes it: the 2-d op on x.unsqueeze(-2), with a
// unit first window dim, squeezed back. Only for constant geometry.
bool poolAs2d(Graph& graph, Node* n) {
  using namespace c10;
  const bool max = n->kind() == aten::max_pool1d, adaptive = n->kind() == aten::adaptive_avg_pool1d;
  // Per list argument: the value the added leading dim gets (kernel and
  // dilation 1, stride 1, padding 0); -1 marks a non-list argument.
  const std::vector<int64_t> lead = adaptive ? std::vector<int64_t>{1}
                                    : max    ? std::vector<int64_t>{1, 1, 0, 1, -1}
                                             : std::vector<int64_t>{1, 1, 0, -1, -1};
  std::vector<NamedValue> args;  // inserted before n (respell's insert point)
  Value* x = insertValue(graph, aten::unsqueeze, {n->input(0), -2}, n->sourceRange());
  args.emplace_back(x);
  for (size_t i = 0; i < lead.size() && i + 1 < n->inputs().size(); ++i) {
    Value* v = n->input(i + 1);
    if (lead[i] < 0) {
      args.emplace_back(v);
      continue;
    }
    auto c = constantOf(v);
    if (!c || !c->isIntList()) {
      x->node()->destroy();
      return false;  // autodiff reports it
    }
    std::vector<int64_t> l = c->toIntVector();
    if (!l.empty()) l.insert(l.begin(), lead[i]);  // an empty stride means the kernel
    args.emplace_back(graph.insertConstant(l));
  }
  const Symbol kind = adaptive ? aten::adaptive_avg_pool2d : max ? aten::max_pool2d : aten::avg_pool2d;
  Value* pooled = insertValue(graph, kind, args, n->sourceRange());
  replace(n, insertValue(graph, aten::squeeze, {pooled, -2}, n->sourceRange()));
  return true;
}

bool respell(Graph& graph, Node* n) {
  using namespace c10;
  auto range = n->sourceRange();
  WithInsertPoint guard(n);
  if (n->matches("aten::conv1d(Tensor input, Tensor weight, Tensor? bias=None, int[1] stride=1, int[1] padding=0, int[1] dilation=1, int groups=1) -> Tensor") ||
      n->matches("aten::conv2d(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[2] padding=0, int[2] dilation=1, int groups=1) -> Tensor") ||
      n->matches("aten::conv3d(Tensor input, Tensor weight, Tensor? bias=None, int[3] stride=1, int[3] padding=0, int[3] dilation=1, int groups=1) -> Tensor")) {
    auto zeros = graph.insertConstant(std::vector<int64_t>(convDims(n), 0));
    replace(n, insertValue(graph, aten::convolution,
                           {n->input(0), n->input(1), n->input(2), n->input(3), n->input(4), n->input(5),
                            graph.insertConstant(false), zeros, n->input(6)},
                           range));
    return true;
  }
  if (n->matches("aten::conv_transpose1d(Tensor input, Tensor weight, Tensor? bias=None, int[1] stride=1, int[1] padding=0, int[1] output_padding=0, int groups=1, int[1] dilation=1) -> Tensor") ||
      n->matches("aten::conv_transpose2d.input(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[2] padding=0, int[2] output_padding=0, int groups=1, int[2] dilation=1) -> Tensor") ||
      n->matches("aten::conv_transpose3d.input(Tensor input, Tensor weight, Tensor? bias=None, int[3] stride=1, int[3] padding=0, int[3] output_padding=0, int groups=1, int[3] dilation=1) -> Tensor")) {
    replace(n, insertValue(graph, aten::convolution,
                           {n->input(0), n->input(1), n->input(2), n->input(3), n->input(4), n->input(7),
                            graph.insertConstant(true), n->input(5), n->input(6)},
                           range));
    return true;
  }
  if (n->kind() == aten::_convolution && n->inputs().size() >= 9) {
    std::vector<NamedValue> args(n->inputs().begin(), n->inputs().begin() + 9);
    replace(n, insertValue(graph, aten::convolution, args, range));
    return true;
  }
  if (n->matches("aten::relu6(Tensor self) -> Tensor")) {
    replace(n, insertValue(graph, aten::hardtanh, {n->input(0), 0.0, 6.0}, range));
    return true;
  }
  if (n->matches("aten::adaptive_avg_pool2d(Tensor self, int[2] output_size) -> Tensor")) {
    auto size = constantOf(n->input(1));
    if (size && size->isIntList() && size->toIntVector() == std::vector<int64_t>{1, 1}) {
      replace(n, insertValue(graph, aten::mean,
                             {n->input(0), graph.insertConstant(std::vector<int64_t>{-1, -2}), true}, range,
                             {NamedValue("dtype", graph.insertConstant(IValue()))}));
      return true;
    }
    return false;
  }
  if (n->matches("aten::pad(Tensor self, int[] pad, str mode=\"constant\", float? value=None) -> Tensor") ||
      n->matches("aten::pad(Tensor self, SymInt[] pad, str mode=\"constant\", float? value=None) -> Tensor")) {
    auto mode = constantOf(n->input(2));
    if (!mode || !mode->isString()) return false;  // autodiff reports it
    if (mode->toStringRef() != "constant") {
      // What ATen's pad calls for the mode; the padded dims follow from
      // the widths' count.
      auto widths = constantOf(n->input(1));
      if (!widths || !widths->isIntList()) return false;
      // ATen refuses a fill value in these modes; leave it to raise so.
      auto fill = constantOf(n->input(3));
      if (!fill || !fill->isNone()) return false;
      const size_t dims = widths->toIntList().size() / 2;
      const std::string& m = mode->toStringRef();
      std::string op;
      if ((m == "reflect" || m == "replicate") && dims >= 1 && dims <= 3)
        op = std::string(m == "reflect" ? "aten::reflection_pad" : "aten::replication_pad") + std::to_string(dims) + "d";
      else if (m == "circular") {
        for (int64_t w : widths->toIntVector())
          if (w < 0) return false;  // cropping: the fold-back rule does not cover it
        op = "aten::_pad_circular";
      }
      else
        return false;
      replace(n, insertValue(graph, Symbol::fromQualString(op), {n->input(0), n->input(1)}, range));
      return true;
    }
    auto value = constantOf(n->input(3));
    Value* fill = value && value->isNone() ? graph.insertConstant(0.0) : n->input(3);
    replace(n, insertValue(graph, aten::constant_pad_nd, {n->input(0), n->input(1), fill}, range));
    return true;
  }
  if (n->kind() == aten::max_pool1d || n->kind() == aten::avg_pool1d || n->kind() == aten::adaptive_avg_pool1d)
    return poolAs2d(graph, n);
  if (n->matches("aten::dropout(Tensor input, float p, bool train) -> Tensor") ||
      n->matches("aten::feature_dropout(Tensor input, float p, bool train) -> Tensor")) {
    if (isConstant(n->input(1), 0.0) || isConstant(n->input(2), false)) {
      replace(n, n->input(0));
      return true;
    }
    return false;
  }
  if (n->matches("aten::cross_entropy_loss(Tensor self, Tensor target, Tensor? weight=None, int reduction=Mean, SymInt ignore_index=-100, float label_smoothing=0.0) -> Tensor") ||
      n->matches("aten::cross_entropy_loss(Tensor self, Tensor target, Tensor? weight=None, int reduction=Mean, int ignore_index=-100, float label_smoothing=0.0) -> Tensor")) {
    if (!isConstant(n->input(5), 0.0)) return false;  // autodiff reports it
    Value* log_probs = insertValue(graph, aten::log_softmax,
                                   {n->input(0), 1}, range,
                                   {NamedValue("dtype", graph.insertConstant(IValue()))});
    replace(n, insertValue(graph, aten::nll_loss_nd,
                           {log_probs, n->input(1), n->input(2), n->input(3), n->input(4)}, range));
    return true;
  }
  return false;
}

// Attention and RMSNorm as the ops they compute (PyTorch's math reference
// for scaled_dot_product_attention; rms_norm's definition), so that the
// saved values are the ones the rules and the compression policy know:
// Q and K for the scores' matmul, the softmax output (the attention
// probabilities), V, and the dropout mask. Decisions on constant arguments
// (is_causal, scale, dropout_p, a mask's presence) fold away; a mask's dtype
// is decided where it is known, or becomes a branch per dtype. (Dtypes are
// c10::ScalarType numbers here: the helper compiles without Python's torch.)
const char* kDecompositions = R"TS(
def sdpa(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor], dropout_p: float,
         is_causal: bool, scale: Optional[float], enable_gqa: bool) -> Tensor:
    if scale is None:
        s = 1.0 / float(q.size(-1)) ** 0.5
    else:
        s = scale
    if enable_gqa:
        k = k.repeat_interleave(q.size(-3) // k.size(-3), -3)
        v = v.repeat_interleave(q.size(-3) // v.size(-3), -3)
    scores = torch.matmul(q, k.transpose(-2, -1)) * s
    if is_causal:
        keep = torch.ones([q.size(-2), k.size(-2)], dtype=11, device=q.device).tril()  # 11: bool
        scores = scores.masked_fill(keep.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == 11:
            scores = scores.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            scores = scores + attn_mask
    p = torch.softmax(scores, -1)
    if dropout_p > 0.0:
        p = torch.dropout(p, dropout_p, True)
    return torch.matmul(p, v)

def rms_norm(x: Tensor, normalized_shape: List[int], weight: Optional[Tensor], eps: Optional[float]) -> Tensor:
    dims: List[int] = []
    for i in range(len(normalized_shape)):
        dims.append(-1 - i)
    e = 1.1920928955078125e-07  # torch.finfo(x.dtype).eps where eps is None
    if eps is not None:
        e = eps
    elif x.dtype == 7:  # float64
        e = 2.220446049250313e-16
    elif x.dtype == 5:  # float16
        e = 0.0009765625
    elif x.dtype == 15:  # bfloat16
        e = 0.0078125
    y = x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + e)
    if weight is not None:
        y = y * weight
    return y
)TS";

bool decompose(Graph& graph, Node* n) {
  static const auto sdpa = c10::Symbol::fromQualString("aten::scaled_dot_product_attention");
  static const auto rms = c10::Symbol::fromQualString("aten::rms_norm");
  std::vector<Value*> args(n->inputs().begin(), n->inputs().end());
  std::string helper;
  if (n->kind() == sdpa && (args.size() == 7 || args.size() == 8)) {
    if (args.size() == 7) args.push_back(graph.insertConstant(false));  // before enable_gqa (torch < 2.5)
    helper = "sdpa";
  } else if (n->kind() == rms && args.size() == 4) {
    helper = "rms_norm";
  } else {
    return false;
  }
  WithInsertPoint guard(n);
  Node* before = n->prev();
  Value* out = torch::jit::insertGraph(graph, *scriptHelperGraph(kDecompositions, helper), args).at(0);
  // The user's line, not the helper's, for every node of the decomposition.
  const auto range = n->sourceRange();
  auto mark = [&](Node* inserted) { inserted->setSourceRange(range); };
  for (Node* inserted = before->next(); inserted != n; inserted = inserted->next()) {
    mark(inserted);
    for (auto* block : inserted->blocks()) forEachNode(block, mark);
  }
  replace(n, out);
  return true;
}

// x.op_(args): an in-place op writing its first argument and returning it
// (not a dunder such as __iadd__).
bool isInPlace(const Node* n) {
  const auto* schema = n->maybeSchema();
  const std::string name = n->kind().toUnqualString();
  return schema && name.size() >= 2 && name.back() == '_' && name[name.size() - 2] != '_' &&
         !schema->arguments().empty() && schema->arguments()[0].alias_info() &&
         schema->arguments()[0].alias_info()->isWrite() && n->outputs().size() == 1;
}

// x.op(args) for in-place n = x.op_(args), inserted at the insert point;
// nullptr (nothing inserted) where the op has no functional variant.
Node* insertFunctional(Graph& graph, Node* n) {
  const auto* schema = n->maybeSchema();
  const std::string name = n->kind().toUnqualString();
  auto functional = c10::Symbol::fromQualString(std::string(n->kind().ns().toUnqualString()) + "::" +
                                                name.substr(0, name.size() - 1));
  std::vector<NamedValue> args, kwargs;
  for (size_t i = 0; i < n->inputs().size() && i < schema->arguments().size(); ++i) {
    const auto& arg = schema->arguments()[i];
    if (arg.kwarg_only())
      kwargs.emplace_back(arg.name(), n->input(i));
    else
      args.emplace_back(n->input(i));
  }
  try {
    return insertOp(graph, functional, args, n->sourceRange(), kwargs);
  } catch (const std::exception&) {
    return nullptr;
  }
}

// x.op_(args) -> x' = x.op(args), uses of x after the node read x'. Only when
// no other view of x's storage is read after the node (dropout_ on a
// flatten() result is fine) and the storage is not a graph input: buffers
// keep their mutation.
bool functionalize(Graph& graph, Node* n) {
  if (!isInPlace(n)) return false;
  Value* x = n->input(0);
  if (x->node()->owningBlock() != n->owningBlock()) return false;
  // The views sharing x's storage; a graph input's storage is the caller's.
  std::vector<Value*> family = viewFamily(x);
  if (family.front()->node()->kind() == c10::prim::Param) return false;
  // Mutating x through its view family is invisible to functional code only
  // if nothing but x itself is read afterwards.
  for (Value* member : family) {
    if (member == x) continue;
    for (const auto& use : member->uses())
      if (use.user != n && use.user->isAfter(n)) return false;
  }
  for (const auto& use : x->uses())
    if (use.user != n && use.user->isAfter(n) && returnsAlias(use.user)) return false;
  WithInsertPoint guard(n);
  Node* f = insertFunctional(graph, n);
  if (!f) return false;  // no functional variant; autodiff reports it if it matters
  Value* fresh = f->output();
  fresh->setType(n->output()->type());
  n->output()->replaceAllUsesWith(fresh);
  x->replaceAllUsesAfterNodeWith(f, fresh);
  n->destroy();
  return true;
}

// A write through slices and selects of a tensor made in the graph:
//   %v = aten::slice(%b, dim, start, end, step); aten::zero_(%v)
//     ->  %b' = aten::slice_scatter(%b, zeros_like(%v), dim, start, end, step)
// and later reads of %b read %b'. zero_ writes zeros_like, fill_ full_like,
// copy_ its source broadcast to %v, any other op_ its functional op's result
// (`attn[:, :, 1:, 1:] += rel_pos`: add); through a chain of views the value
// is scattered back view by view. Swin V2 zeroes the key part of a cloned
// qkv bias so; MViT V2 adds its relative positions so. A direct view of %b
// read after the write is made again from %b'. Only when the write's result,
// the views of the chain and deeper views of %b are not read after the
// write, and %b is made by an op whose result aliases nothing and no
// container took it before the write (a buffer keeps its mutation).
bool isSliceOrSelect(const Node* v) {
  return v->matches("aten::slice.Tensor(Tensor(a) self, int dim=0, int? start=None, int? end=None, int step=1) -> "
                    "Tensor(a)") ||
         v->matches("aten::select.int(Tensor(a) self, int dim, int index) -> Tensor(a)");
}

bool functionalizeViewWrite(Graph& graph, Node* n) {
  using namespace c10;
  const bool zero = n->matches("aten::zero_(Tensor(a!) self) -> Tensor(a!)");
  const bool fill = n->matches("aten::fill_.Scalar(Tensor(a!) self, Scalar value) -> Tensor(a!)");
  const bool copy = n->matches("aten::copy_(Tensor(a!) self, Tensor src, bool non_blocking=False) -> Tensor(a!)");
  const bool other = !zero && !fill && !copy && n->kind().ns() == aten::add.ns() && isInPlace(n);
  if (!zero && !fill && !copy && !other) return false;
  Value* view = n->input(0);
  std::vector<Node*> chain;  // innermost view first
  for (Value* v = view; isSliceOrSelect(v->node()); v = v->node()->input(0)) chain.push_back(v->node());
  if (chain.empty()) return false;
  Value* base = chain.back()->input(0);
  const c10::FunctionSchema* made_by = base->node()->maybeSchema();
  if (!made_by || base->offset() >= made_by->returns().size() || made_by->returns()[base->offset()].alias_info())
    return false;
  if (base->node()->owningBlock() != n->owningBlock()) return false;
  for (Node* v : chain)
    if (v->owningBlock() != n->owningBlock()) return false;
  if (n->output()->hasUses()) return false;
  for (const auto& use : base->uses())
    if (!use.user->isAfter(n) && (!use.user->maybeSchema() || writesOperand(use))) return false;
  // The chain's views are not read after the write (but by the chain).
  for (Node* v : chain)
    for (const auto& use : v->output()->uses())
      if (use.user != n && use.user->isAfter(n) &&
          std::find(chain.begin(), chain.end(), use.user) == chain.end())
        return false;
  // Other views of base read after the write must read the written tensor:
  // a direct view taken before it is taken again; a deeper one stops us.
  std::vector<Value*> reread;
  for (Value* member : viewFamily(base)) {
    if (member == base || std::find(chain.begin(), chain.end(), member->node()) != chain.end()) continue;
    bool read_after = false;
    for (const auto& use : member->uses()) read_after |= use.user->isAfter(n);
    if (!read_after || member->node()->isAfter(n)) continue;
    if (member->node()->input(0) != base || member->node()->owningBlock() != n->owningBlock()) return false;
    reread.push_back(member);
  }
  WithInsertPoint guard(n);
  const auto range = n->sourceRange();
  Value* value = nullptr;
  if (zero) {
    value = insertValue(graph, aten::zeros_like, {view}, range);
  } else if (fill) {
    value = insertValue(graph, aten::full_like, {view, n->input(1)}, range);
  } else if (copy) {
    value = insertValue(graph, aten::type_as, {insertValue(graph, aten::expand_as, {n->input(1), view}, range), view},
                        range);
  } else {
    Node* f = insertFunctional(graph, n);
    if (!f) return false;  // no functional variant (nothing was inserted)
    value = f->output();
  }
  for (size_t i = 0; i < chain.size(); ++i) {
    Node* v = chain[i];
    const bool slice = v->kind() == aten::slice;
    std::vector<NamedValue> args{v->input(0), value};
    for (size_t j = 1; j < v->inputs().size(); ++j) args.emplace_back(v->input(j));
    value = insertValue(graph, slice ? aten::slice_scatter : aten::select_scatter, args, range);
    value->setType(v->input(0)->type());
  }
  Value* written = value;
  for (Value* member : reread) {
    Node* again = graph.insertNode(graph.createClone(member->node(), [&](Value* in) { return in == base ? written : in; }));
    member->replaceAllUsesAfterNodeWith(n, again->output());
  }
  base->replaceAllUsesAfterNodeWith(written->node(), written);
  n->destroy();
  return true;
}

// l = [a, b]; l.append(c); f(l)  ->  l' = [a, b, c]; f(l'). Only for lists
// built in the same block whose every other use reads them (no other
// mutation, not stored in a container, not returned from a block).
bool functionalizeAppend(Graph& graph, Node* n) {
  if (n->kind() != c10::aten::append || n->inputs().size() != 2) return false;
  Value* list = n->input(0);
  Node* def = list->node();
  if (def->kind() != c10::prim::ListConstruct || def->owningBlock() != n->owningBlock()) return false;
  for (const auto& use : list->uses()) {
    Node* user = use.user;
    if (user == n) continue;
    if (user->kind() == c10::prim::Return || user->kind() == c10::prim::ListConstruct ||
        user->kind() == c10::prim::TupleConstruct || user->kind() == c10::prim::DictConstruct)
      return false;
    if (user->kind() == c10::aten::append) {
      if (!user->isAfter(n)) return false;
      continue;
    }
    const auto* schema = user->maybeSchema();
    if (!schema || use.offset >= schema->arguments().size()) return false;
    const auto& alias = schema->arguments()[use.offset].alias_info();
    if (alias && alias->isWrite()) return false;
  }
  std::vector<Value*> items(def->inputs().begin(), def->inputs().end());
  items.push_back(n->input(1));
  WithInsertPoint guard(n);
  Node* fresh = graph.insertNode(graph.createList(list->type()->expectRef<c10::ListType>().getElementType(), items));
  fresh->setSourceRange(n->sourceRange());
  n->output()->replaceAllUsesWith(fresh->output());
  list->replaceAllUsesAfterNodeWith(fresh, fresh->output());
  n->destroy();
  return true;
}

// l = self.sizes.copy() (or list(...)) of a constant list  ->  l = [a, b, ...]:
// a fresh list literal, which RemoveListMutation can then make functional
// when l is written (Swin's `shift_size[0] = 0`). Folding would instead make
// the written list a shared constant.
bool listLiteral(Graph& graph, Node* n) {
  if ((n->kind() != c10::aten::copy && n->kind() != c10::aten::list) || n->inputs().size() != 1 ||
      n->outputs().size() != 1)
    return false;
  const auto type = n->output()->type()->cast<c10::ListType>();
  const auto value = constantOf(n->input(0));
  if (!type || !value || !value->isList()) return false;
  WithInsertPoint guard(n);
  std::vector<Value*> items;
  for (const auto& e : value->toListRef()) items.push_back(graph.insertConstant(e));
  Node* fresh = graph.insertNode(graph.createList(type->getElementType(), items));
  fresh->setSourceRange(n->sourceRange());
  replace(n, fresh->output());
  return true;
}

// d = {} / dict(...); d[k] = v; f(d)  ->  d' = {..., k: v}; f(d') for a
// constant str or int key (segmentation models build their result dict,
// torchvision's IntermediateLayerGetter its feature dict, this way).
// PeepholeOptimize then folds d'[k], `k in d'` and len(d'). Only for dicts
// built in the same block whose other writes are later item assignments and
// which nothing (a return, a container) holds before this one.
bool functionalizeSetItem(Graph& graph, Node* n) {
  if (n->kind() != c10::aten::_set_item || n->inputs().size() != 3) return false;
  Value* dict = n->input(0);
  Node* def = dict->node();
  const auto dict_type = dict->type()->cast<c10::DictType>();
  const bool fresh_dict = (def->kind() == c10::aten::dict && def->inputs().empty()) ||
                          def->kind() == c10::prim::DictConstruct;
  if (!dict_type || !fresh_dict || def->owningBlock() != n->owningBlock()) return false;
  const auto key = constantOf(n->input(1));
  if (!key || !(key->isString() || key->isInt())) return false;
  for (const auto& use : dict->uses()) {
    Node* user = use.user;
    if (user == n) continue;
    if (user->kind() == c10::aten::_set_item) {
      if (!user->isAfter(n)) return false;
      continue;
    }
    if (user->kind() == c10::prim::Return || user->kind() == c10::prim::ListConstruct ||
        user->kind() == c10::prim::TupleConstruct || user->kind() == c10::prim::DictConstruct) {
      if (!user->isAfter(n)) return false;  // held before the write: it would see it
      continue;
    }
    const auto* schema = user->maybeSchema();
    if (!schema || use.offset >= schema->arguments().size()) return false;
    const auto& alias = schema->arguments()[use.offset].alias_info();
    if (alias && alias->isWrite()) return false;
  }
  // The entries so far, in insertion order; assigning an existing key keeps
  // its place (Python's dict order, which the result's order follows).
  std::vector<Value*> keys, values;
  for (size_t i = 0; i + 1 < def->inputs().size(); i += 2) {
    keys.push_back(def->input(i));
    values.push_back(def->input(i + 1));
  }
  bool replaced = false;
  for (size_t i = 0; i < keys.size(); ++i) {
    const auto k = constantOf(keys[i]);
    if (!k) return false;  // a key not known here: its equality is not either
    if ((k->isString() && key->isString() && k->toStringRef() == key->toStringRef()) ||
        (k->isInt() && key->isInt() && k->toInt() == key->toInt())) {
      values[i] = n->input(2);
      replaced = true;
    }
  }
  if (!replaced) {
    keys.push_back(n->input(1));
    values.push_back(n->input(2));
  }
  WithInsertPoint guard(n);
  Node* fresh = graph.insertNode(graph.createDict(dict_type->getKeyType(), dict_type->getValueType(), keys, values));
  fresh->setSourceRange(n->sourceRange());
  fresh->output()->setType(dict->type());
  dict->replaceAllUsesAfterNodeWith(fresh, fresh->output());
  n->destroy();
  return true;
}

// Values every reaching definition of which is a non-empty string.
bool nonEmptyString(const Value* v) {
  if (!v->type()->isSubtypeOf(*c10::StringType::get())) return false;
  if (auto c = constantOf(v)) return c->isString() && !c->toStringRef().empty();
  const Node* n = v->node();
  if (n->kind() == c10::aten::format) {
    auto fmt = constantOf(n->input(0));
    return fmt && fmt->isString() && !fmt->toStringRef().empty() &&
           fmt->toStringRef().find_first_not_of("{}") != std::string::npos;
  }
  if (n->kind() == c10::prim::If) {
    size_t i = v->offset();
    for (const auto* b : n->blocks()) {
      // A branch that raises yields nothing.
      bool raises = false;
      for (const auto* inner : b->nodes()) raises |= inner->kind() == c10::prim::RaiseException;
      if (!raises && !nonEmptyString(b->outputs()[i])) return false;
    }
    return true;
  }
  return false;
}

bool foldStrings(Graph& graph) {
  bool changed = false;
  forEachNode(graph.block(), [&](Node* n) {
    // `not s` on a string is aten::__not__(aten::Bool(s)), or len(s) > 0
    // (== 0) under `not`.
    c10::optional<bool> fold;
    if (n->kind() == c10::aten::Bool && n->inputs().size() == 1 && nonEmptyString(n->input(0))) fold = true;
    if ((n->kind() == c10::aten::gt || n->kind() == c10::aten::eq || n->kind() == c10::aten::ne) &&
        n->inputs().size() == 2 && n->input(0)->node()->kind() == c10::aten::len &&
        nonEmptyString(n->input(0)->node()->input(0)) && isConstant(n->input(1), 0.0))
      fold = n->kind() != c10::aten::eq;
    // `a is a`: one SSA value is one object.
    if ((n->kind() == c10::aten::__is__ || n->kind() == c10::aten::__isnot__) && n->inputs().size() == 2 &&
        n->input(0) == n->input(1))
      fold = n->kind() == c10::aten::__is__;
    if (fold) {
      WithInsertPoint guard(n);
      replace(n, graph.insertConstant(*fold));
      changed = true;
    }
  });
  return changed;
}

// Static ranks: x.dim() is often known without any input shape because a
// reshape/view/expand/permute names every dimension (ViT's patch embedding),
// and most ops keep or shift the rank. Folds aten::dim and len(x.size()).
c10::optional<int64_t> listLength(const Value* v) {
  if (v->node()->kind() == c10::prim::ListConstruct) return static_cast<int64_t>(v->node()->inputs().size());
  auto c = constantOf(v);
  if (c && c->isIntList()) return static_cast<int64_t>(c->toIntList().size());
  return c10::nullopt;
}

bool foldRanks(Graph& graph, const std::vector<InputInfo>& inputs) {
  static const std::unordered_set<std::string> same = {
      "aten::transpose", "aten::contiguous", "aten::clone", "aten::slice", "aten::dropout",
      "aten::native_dropout", "aten::relu", "aten::gelu", "aten::silu", "aten::sigmoid", "aten::tanh",
      "aten::hardswish", "aten::hardsigmoid", "aten::hardtanh", "aten::leaky_relu", "aten::layer_norm",
      "aten::batch_norm", "aten::group_norm", "aten::softmax", "aten::log_softmax", "aten::to", "aten::neg",
      "aten::linear", "aten::convolution", "aten::max_pool2d", "aten::avg_pool2d", "aten::type_as"};
  static const std::unordered_set<std::string> binary = {"aten::add", "aten::sub", "aten::mul", "aten::div"};
  std::unordered_map<const Value*, int64_t> rank;
  auto get = [&](const Value* v) -> c10::optional<int64_t> {
    auto it = rank.find(v);
    return it == rank.end() ? c10::nullopt : c10::optional<int64_t>(it->second);
  };
  for (size_t i = 0; i < inputs.size() && i < graph.inputs().size(); ++i)
    if (inputs[i].rank >= 0) rank[graph.inputs()[i]] = inputs[i].rank;
  bool changed = false;
  forEachNode(graph.block(), [&](Node* n) {
    const std::string kind = n->kind().toQualString();
    if (n->inputs().empty()) return;
    auto r0 = get(n->input(0));
    c10::optional<int64_t> out;
    if (kind == "aten::reshape" || kind == "aten::view" || kind == "aten::expand" || kind == "aten::permute") {
      out = listLength(n->input(1));
    } else if (kind == "aten::bmm" || kind == "aten::baddbmm") {
      out = 3;
    } else if (same.count(kind)) {
      out = r0;
    } else if (binary.count(kind) && n->inputs().size() >= 2) {
      if (!n->input(1)->type()->isSubtypeOf(*c10::TensorType::get())) {
        out = r0;
      } else if (auto r1 = get(n->input(1))) {
        if (r0) out = std::max(*r0, *r1);
      }
    } else if (kind == "aten::unsqueeze" && r0) {
      out = *r0 + 1;
    } else if (kind == "aten::select" && r0) {
      out = *r0 - 1;
    } else if (kind == "aten::flatten" && r0 && n->inputs().size() == 3) {
      auto s = constantInt(n->input(1)), e = constantInt(n->input(2));
      if (s && e) {
        int64_t start = *s < 0 ? *s + *r0 : *s, end = *e < 0 ? *e + *r0 : *e;
        out = *r0 == 0 ? 1 : *r0 - (end - start);
      }
    } else if (kind == "aten::cat" && n->input(0)->node()->kind() == c10::prim::ListConstruct) {
      for (const Value* item : n->input(0)->node()->inputs())
        if (auto r = get(item)) out = r;
    } else if (kind == "prim::If") {
      // Blocks are visited first: an output whose branches agree has a rank.
      for (size_t i = 0; i < n->outputs().size(); ++i) {
        auto r = get(n->blocks()[0]->outputs()[i]);
        for (const auto* b : n->blocks())
          if (r && get(b->outputs()[i]) != r) r = c10::nullopt;
        if (r) rank[n->output(i)] = *r;
      }
      return;
    } else if (kind == "prim::ListUnpack") {
      const Node* src = n->input(0)->node();
      std::string src_kind = src->kind().toQualString();
      if ((src_kind == "aten::chunk" || src_kind == "aten::split") && get(src->input(0)))
        for (Value* o : n->outputs()) rank[o] = *get(src->input(0));
      return;
    } else if (kind == "aten::dim" && r0) {
      WithInsertPoint guard(n);
      replace(n, graph.insertConstant(*r0));
      changed = true;
      return;
    } else if (kind == "aten::len" && n->input(0)->node()->kind() == c10::aten::size &&
               n->input(0)->node()->inputs().size() == 1) {
      if (auto r = get(n->input(0)->node()->input(0))) {
        WithInsertPoint guard(n);
        replace(n, graph.insertConstant(*r));
        changed = true;
      }
      return;
    }
    if (out && !n->outputs().empty()) rank[n->output(0)] = *out;
  });
  return changed;
}

class Canonicalize : public Pass {
 public:
  Canonicalize() {
    options_.declare("shape-checks", "keep",
                     "keep|remove branches that only raise (shape asserts) in the forward graph");
  }

  void checkOptions() const override {
    const std::string& checks = options_.str("shape-checks");
    if (checks != "keep" && checks != "remove")
      throw CompileError("option shape-checks expects keep or remove, got '" + checks + "'");
  }

  bool run(TrainingIR& ir, Diagnostics& diag) override {
    const std::string& checks = options_.str("shape-checks");
    auto& graph = ir.graph;
    bool any = false;
    // Each round can unlock the next (ViT folds one encoder layer's rank
    // checks per round), so run to a fixed point; every step shrinks or
    // respells the graph, and the bound only guards against a bug.
    const int kMaxRounds = 10000;
    int round = 0;
    for (; round < kMaxRounds; ++round) {
      bool changed = false;
      changed |= torch::jit::RemoveListMutation(graph);
      changed |= torch::jit::InplaceToFunctionalActivation(graph);
      forEachNode(graph->block(), [&](Node* n) { changed |= functionalize(*graph, n); });
      forEachNode(graph->block(), [&](Node* n) { changed |= functionalizeViewWrite(*graph, n); });
      forEachNode(graph->block(), [&](Node* n) { changed |= functionalizeAppend(*graph, n); });
      forEachNode(graph->block(), [&](Node* n) { changed |= functionalizeSetItem(*graph, n); });
      forEachNode(graph->block(), [&](Node* n) { changed |= listLiteral(*graph, n); });
      forEachNode(graph->block(), [&](Node* n) { changed |= respell(*graph, n); });
      forEachNode(graph->block(), [&](Node* n) { changed |= decompose(*graph, n); });
      changed |= foldStrings(*graph);
      changed |= foldRanks(*graph, ir.inputs);
      changed |= torch::jit::ConstantPropagation(graph);
      changed |= torch::jit::UnrollConstantLoops(graph);
      changed |= torch::jit::PeepholeOptimize(graph);
      torch::jit::LowerSimpleTuples(graph);
      torch::jit::EliminateDeadCode(graph);
      if (checks == "remove") torch::jit::EliminateExceptions(graph);
      any |= changed;
      if (!changed) break;
    }
    TORCH_INTERNAL_ASSERT(round < kMaxRounds, "canonicalize did not reach a fixed point");
    torch::jit::ConstantPooling(graph);
    torch::jit::EliminateDeadCode(graph);
    return any;
  }

};

}  // namespace

std::unique_ptr<Pass> createCanonicalizePass() { return std::make_unique<Canonicalize>(); }

}  // namespace actnn
