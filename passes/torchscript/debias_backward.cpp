// debias-backward (L1-L5, after insert-compression): B's readers that use a
// dequantized value nonlinearly get the correction that makes their result
// unbiased again. A rounded value x' = x + e has E[e] = 0, so every reader
// linear in x' is unbiased as it is (convolution and linear weight
// gradients); a reader that multiplies x' by itself, or by a sum that
// contains it, gets E[e^2] = v in its result. For the readers below that term
// is exactly `dy * v` times a factor known in B, so adding it back removes
// the bias (README: "Unbiased normalization backward" has the algebra).
//
// v must be right value by value, and plain stochastic rounding's noise
// variance, step^2 t (1 - t), depends on where x sat between two levels,
// which B does not know. Two ways around it, by what the reader reads:
//
// Normalization inputs (batch, layer, group norm) are dense, rarely on a
// level, and so are tanh's and sigmoid's outputs in the nets measured: their
// site is marked for subtractive dither
// (CompressionConfig::Site::dither): dequantize subtracts the uniform that
// rounded the value, and the noise becomes uniform on (-step/2, step/2]
// whatever x was, v = step^2 / 12 exactly (quant_math.h, "Dithered
// decoding"). That also halves the average noise of these values, which is
// where most of the gradient's variance comes from (ResNet-18 at L3: one
// pass's deviation 0.70 of |g| uncorrected, 0.53 corrected and dithered).
//
// Softmax outputs mostly sit on a level -- a masked or negligible attention
// weight is 0, a row's maximum is the group's top -- and plain decoding
// returns those exactly, where dither would give each noise of step^2 / 12:
// on a causal attention row the masked zeros' noise enters every weight's
// gradient through softmax's sum (a GPT trained at L3 with dithered softmax
// outputs diverged from step ~230; README "Transformers"). Softmax's one
// biased term is dy * y'^2, so B keeps plain decoding and
// actnn::debias_square_grad replaces that term's y'^2 by the dithered
// decoding's square minus step^2 / 12, unbiased value by value
// (runtime/debias.cpp). (The same form would do for tanh and sigmoid, whose
// biased term is also dy * y'^2; on stats_transformer their dense outputs
// gave one pass's deviation 0.066 of |g| that way against 0.057 dithered.)
// Sites read only by linear readers keep plain decoding too: a ReLU output's
// zeros decode exactly there.
//
//   %x = actnn::dequantize(%p)                %x = actnn::dequantize(%p)
//   %gx, %gw, %gb = aten::native_batch_norm_backward(%dy, %x, ..., %train, ...)
//       ->  %gx, %gw, %gb = actnn::batch_norm_backward(%dy, %x, ..., False, %p)
//   %gx = aten::tanh_backward(%dy, %y)   ->  %g = aten::tanh_backward(%dy, %y)
//                                            %gx = actnn::debias_grad(%g, %dy, %p, None, True)
//   %gx = aten::_softmax_backward_data(%dy, %y, ...)
//       ->  %g = aten::_softmax_backward_data(%dy, %y, ...)
//           %gx = actnn::debias_square_grad(%g, %dy, %y, %p, None, True)
//
// Readers and their factor on the corrected term:
//   batch norm (training)  w_c invstd_c^3 / M      (dy * v; fused in our CPU kernel)
//   layer norm             w rstd^3 / N            (dy * v; N values per row)
//   group norm             w_c rstd^3 / (C/G HxW)  (dy * v)
//   tanh, sigmoid          1                        (dy * v; they read their output y:
//                          tanh 1 - y^2; sigmoid y (1 - y))
//   softmax                1                        (dy * (y'^2 - y~^2 + v), y~ dithered;
//                          y (dy - sum dy y))
//
// The `readers` option narrows the kinds corrected (ablations: which
// reader's correction a result depends on).
//
// GELU and SiLU backward compute dy * f'(x'), biased by f's curvature, which
// no function of the codes removes. When that backward is the value's only
// reader in B, F saves f'(x) instead of x (same size, same site) and B
// multiplies: E[dy * f'(x)'] = dy * f'(x), exactly unbiased.
//
//   F: %p = actnn::compress(%x, ...)        F: %d = <f'(%x)>; %p = actnn::compress(%d, ...)
//   B: %gx = aten::gelu_backward(%dy, actnn::dequantize(%p), "none")
//                                           B: %gx = aten::mul(%dy, actnn::dequantize(%p))
//
// Left alone: readers whose bias has no such form (log-softmax's exp, a GELU
// input that another rule also reads, ...), readers of values that are not
// dequantized, and batch norm in eval mode (linear in its input).
#include <algorithm>
#include <set>
#include <sstream>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/pass.h"

namespace actnn {
namespace {

using torch::jit::Graph;
using torch::jit::NamedValue;
using torch::jit::Node;
using torch::jit::Value;

// In TorchScript: the factor on dy * v per reader, from what its backward
// node already reads, and the derivatives F saves for GELU and SiLU.
const char* kHelpers = R"TS(
def layer_norm(x: Tensor, rstd: Tensor, weight: Optional[Tensor]) -> Tensor:
    c = rstd.pow(3) * (rstd.numel() / x.numel())
    if weight is not None:
        c = c * weight
    return c

def gelu_derivative(x: Tensor, approximate: str) -> Tensor:
    one = torch.ones([1], dtype=x.dtype, device=x.device).expand_as(x)
    return torch.gelu_backward(one, x, approximate=approximate)

def silu_derivative(x: Tensor) -> Tensor:
    one = torch.ones([1], dtype=x.dtype, device=x.device).expand_as(x)
    return torch.silu_backward(one, x)

def group_norm(x: Tensor, rstd: Tensor, weight: Optional[Tensor], group: int) -> Tensor:
    n = x.size(0)
    channels = x.size(1)
    shape: List[int] = [n, channels]
    for i in range(2, x.dim()):
        shape.append(1)
    per_group = float(x.numel()) / float(n * group)
    c = (rstd.pow(3) / per_group).repeat_interleave(channels // group, 1).reshape(shape)
    if weight is not None:
        shape[0] = 1
        c = c * weight.reshape(shape)
    return c
)TS";

std::shared_ptr<Graph> helperGraph(const std::string& name) { return scriptHelperGraph(kHelpers, name); }

// The packed value v was dequantized from, when v is a dequantize result.
Value* roundedFrom(Value* v) {
  Node* n = v->node();
  return n->kind() == actnnOp("dequantize") ? n->input(0) : nullptr;
}

bool isTrainingBatchNorm(Node* n) {
  auto train = constantOf(n->input(7));
  return train && train->isBool() && train->toBool();
}

// batch norm: our op, with the packed value last (its kernel applies the
// correction while it writes the input gradient).
void rewriteBatchNorm(Node* n, Value* packed, Graph& b) {
  std::vector<NamedValue> args(n->inputs().begin(), n->inputs().end());
  args.emplace_back(false);  // donate_input: reuse-buffers decides
  args.emplace_back(packed);
  replaceNode(n, b, actnnOp("batch_norm_backward"), args);
}

// At the insert point; None stands for 1.
Value* coefficient(Node* n, Graph& b) {
  if (n->kind() == c10::aten::native_layer_norm_backward)
    return torch::jit::insertGraph(b, *helperGraph("layer_norm"), {n->input(1), n->input(4), n->input(5)}).at(0);
  if (n->kind() == c10::aten::native_group_norm_backward)
    return torch::jit::insertGraph(b, *helperGraph("group_norm"),
                                   {n->input(1), n->input(3), n->input(4), n->input(8)})
        .at(0);
  return b.insertConstant(c10::IValue());  // 1
}

// Softmax's backward: its value keeps plain decoding, its square term is
// corrected from the dithered one.
bool correctsSquareTerm(Node* n) { return n->kind() == c10::aten::_softmax_backward_data; }

// The others: the input gradient (output 0) plus its correction, right after n.
void addCorrection(Node* n, Value* packed, Graph& b) {
  Value* gx = n->output(0);
  torch::jit::WithInsertPoint guard(n->next());
  Value* coeff = coefficient(n, b);
  Value* fixed = correctsSquareTerm(n)
                     ? insertValue(b, actnnOp("debias_square_grad"), {gx, n->input(0), n->input(1), packed, coeff, true},
                                   n->sourceRange())
                     : insertValue(b, actnnOp("debias_grad"), {gx, n->input(0), packed, coeff, true}, n->sourceRange());
  fixed->setType(gx->type());
  gx->replaceAllUsesAfterNodeWith(fixed->node(), fixed);
}

// The actnn::compress in F that made B's packed input `packed`, or null.
Node* compressOf(Value* packed, const TrainingIR& ir) {
  Graph &f = *ir.forward, &b = *ir.backward;
  size_t index = 0;
  while (index < b.inputs().size() && b.inputs()[index] != packed) ++index;
  if (index >= f.outputs().size()) return nullptr;
  Node* compress = f.outputs()[index]->node();
  return compress->kind() == actnnOp("compress") ? compress : nullptr;
}

// The site of `packed` decodes with subtractive dither from now on (every
// reader of it then sees dithered values: unbiased for all of them).
void dither(Value* packed, TrainingIR& ir) {
  Node* compress = compressOf(packed, ir);
  auto site = compress ? constantInt(compress->input(2)) : c10::nullopt;
  if (site && *site >= 0 && size_t(*site) < ir.compression->sites.size())
    ir.compression->sites[size_t(*site)].dither = true;
}

// A pointwise backward dy * f'(x) whose rounded x nothing else reads: F
// quantizes f'(x) in x's place and B multiplies. False when the pattern does
// not hold.
bool saveDerivative(Node* n, TrainingIR& ir) {
  Graph &f = *ir.forward, &b = *ir.backward;
  Value* x_b = n->input(1);
  Value* packed_b = roundedFrom(x_b);
  if (!packed_b || x_b->uses().size() != 1 || packed_b->uses().size() != 1) return false;
  Node* compress = compressOf(packed_b, ir);
  if (!compress || compress->output()->uses().size() != 1) return false;
  Value* x = compress->input(0);
  {
    torch::jit::WithInsertPoint guard(compress);
    std::vector<Value*> args{x};
    if (n->kind() == c10::aten::gelu_backward) args.push_back(f.insertConstant(*constantOf(n->input(2))));
    const char* helper = n->kind() == c10::aten::gelu_backward ? "gelu_derivative" : "silu_derivative";
    Value* d = torch::jit::insertGraph(f, *helperGraph(helper), args).at(0);
    compress->replaceInput(0, d);
  }
  replaceNode(n, b, c10::aten::mul, {n->input(0), x_b});
  return true;
}

// The reader kinds the `readers` option names, and the backward ops of each.
struct ReaderKind {
  const char* name;
  c10::Symbol op;
};
const std::vector<ReaderKind>& readerKinds() {
  static const std::vector<ReaderKind> kinds = {
      {"batch-norm", c10::aten::native_batch_norm_backward}, {"layer-norm", c10::aten::native_layer_norm_backward},
      {"group-norm", c10::aten::native_group_norm_backward}, {"softmax", c10::aten::_softmax_backward_data},
      {"tanh", c10::aten::tanh_backward},                     {"sigmoid", c10::aten::sigmoid_backward},
      {"gelu", c10::aten::gelu_backward},                     {"silu", c10::aten::silu_backward}};
  return kinds;
}

// "all" or names joined by '+' -> the backward ops to rewrite.
std::set<c10::Symbol> selectedReaders(const std::string& text) {
  std::set<c10::Symbol> ops;
  if (text == "all") {
    for (const auto& k : readerKinds()) ops.insert(k.op);
    return ops;
  }
  if (text == "none") return ops;
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, '+')) {
    auto it = std::find_if(readerKinds().begin(), readerKinds().end(),
                           [&](const ReaderKind& k) { return item == k.name; });
    if (it == readerKinds().end()) {
      std::string known;
      for (const auto& k : readerKinds()) known += std::string(known.empty() ? "" : ", ") + k.name;
      throw CompileError("unknown reader '" + item + "' in readers=" + text + " (known: " + known +
                         "; or all, none)");
    }
    ops.insert(it->op);
  }
  return ops;
}

class DebiasBackward : public Pass {
 public:
  DebiasBackward() {
    options_.declare("readers", "all",
                     "all | none | reader kinds joined by '+' (batch-norm, layer-norm, group-norm, softmax, tanh, "
                     "sigmoid, gelu, silu): which backward readers are corrected");
  }
  void checkOptions() const override { selectedReaders(options_.str("readers")); }
  bool run(TrainingIR& ir, Diagnostics& diag) override {
    const std::set<c10::Symbol> selected = selectedReaders(options_.str("readers"));
    if (!ir.backward || !ir.compression) {
      diag.error("nothing is dequantized in B yet; run insert-compression first");
      return false;
    }
    Graph& b = *ir.backward;
    std::vector<Node*> readers;
    for (Node* n : b.block()->nodes()) {
      if (selected.count(n->kind())) readers.push_back(n);
    }
    bool changed = false;
    for (Node* n : readers) {
      if (n->kind() == c10::aten::gelu_backward || n->kind() == c10::aten::silu_backward) {
        if (n->kind() == c10::aten::silu_backward || constantOf(n->input(2))) changed |= saveDerivative(n, ir);
        continue;
      }
      // Every one of them reads the rounded value as its second operand.
      Value* packed = roundedFrom(n->input(1));
      if (!packed || !n->output(0)->hasUses()) continue;
      const bool square_term = correctsSquareTerm(n);  // asked before n may be destroyed
      if (n->kind() == c10::aten::native_batch_norm_backward) {
        if (!isTrainingBatchNorm(n)) continue;
        rewriteBatchNorm(n, packed, b);  // destroys n
      } else {
        addCorrection(n, packed, b);
      }
      if (!square_term) dither(packed, ir);
      changed = true;
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> createDebiasBackwardPass() { return std::make_unique<DebiasBackward>(); }

}  // namespace actnn
