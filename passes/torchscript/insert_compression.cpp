// insert-compression: store the saved set compressed. Quantize-on-save in
// the forward graph F right after each value is produced (so the
// full-precision value dies at its last forward use), dequantize-on-use in
// the backward graph B right before its first use.
//
//   F:  %y = aten::convolution(%x, ...)          F:  %y = aten::convolution(%x, ...)
//       %r = aten::relu(%y)                          %r = aten::relu(%y)
//       return (..., %r)                             %m = actnn::pack_mask(%r)   (bits: %r != 0)
//                                                    %p = actnn::compress(%r, %actnn_state, 3, 1, %w)
//                                                    return (..., %p, %m, %r_sizes)
//   B:  %g1 = aten::threshold_backward(%g, %r, 0)    %g1 = actnn::scale_by_mask(%g, %m, 1., 0., ...)
//       ... convolution_backward(%g2, %r, ...)       %r2 = actnn::dequantize(%p)
//                                                    ... convolution_backward(%g2, %r2, ...)
//
// Per saved-set kind: a mask is packed to 1 bit per value; max-pooling
// indices to window-relative indices of ceil(log2(window)) bits; an
// activation read by relu / hardtanh / leaky_relu backward gets a 1-bit mask
// for that reader (exact), and is quantized for the readers that need its
// values (conv, batch norm, linear, ...) — when no such reader is left it is
// not saved at all. Held values, statistics, metadata and other tensors stay.
// Quantized activations become numbered sites of the runtime's
// CompressionState (runtime/compression.h), F and B take the state as their
// last input, and with mixed=true B reports the gradient into each site's
// consumers (actnn::observe_grad) for the bit allocator.
//
// Options: bits (fixed width 1/2/4/8, or with mixed=true the average budget),
// mixed, only=all|conv-inputs (L1 quantizes convolution inputs only),
// group-size, masks=true|false, softmax-floor (a softmax output's fewest bits under
// mixed precision, 4 by default), product-floor (the same for the operands of
// a product of two activations, attention's Q, K and V; 4 by default).
#include <torch/custom_class.h>

#include <algorithm>
#include <cstdlib>
#include <map>

#include <torch/csrc/jit/passes/common_subexpression_elimination.h>
#include <torch/csrc/jit/passes/constant_pooling.h>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/pass.h"

namespace actnn {
namespace {

using torch::jit::Graph;
using torch::jit::NamedValue;
using torch::jit::Node;
using torch::jit::Value;
using torch::jit::WithInsertPoint;

c10::TypePtr stateType() {
  static const auto type = actnnClass("CompressionState");
  return type;
}

// The node of B's top-level block that holds the earliest use of v.
Node* firstUse(Value* v, torch::jit::Block* top) {
  Node* first = nullptr;
  for (const auto& use : v->uses()) {
    Node* n = topLevelNode(use.user, top);
    if (!first || n->isBefore(first)) first = n;
  }
  return first;
}

bool isConstant(const Value* v) { return v->node()->kind() == c10::prim::Constant; }

// A B reader that needs only a mask of the value: relu (threshold),
// hardtanh and leaky_relu backward, with their parameters constant.
// NonZero: a threshold at 0 of a relu output (>= 0 or NaN), whose mask is
// just "v != 0" (set where the gradient passes): pack_mask reads v itself,
// with no compare and no bool tensor in between.
struct MaskReader {
  Node* node;
  enum { Threshold, NonZero, Hardtanh, LeakyRelu } kind;
};

bool isReluOutput(const Value* v) {
  return v->node()->kind() == c10::aten::relu || v->node()->kind() == c10::aten::relu_;
}

c10::optional<MaskReader> maskReader(Node* n, size_t offset, const Value* saved) {
  if (offset != 1) return c10::nullopt;
  if (n->kind() == c10::aten::threshold_backward && isConstant(n->input(2))) {
    auto threshold = constantOf(n->input(2));
    if (isReluOutput(saved) && threshold && threshold->isScalar() && threshold->toScalar().toDouble() == 0)
      return MaskReader{n, MaskReader::NonZero};
    return MaskReader{n, MaskReader::Threshold};
  }
  if (n->kind() == c10::aten::hardtanh_backward && isConstant(n->input(2)) && isConstant(n->input(3)))
    return MaskReader{n, MaskReader::Hardtanh};
  if (n->kind() == c10::aten::leaky_relu_backward && isConstant(n->input(2)) && isConstant(n->input(3))) {
    auto result = constantOf(n->input(3));
    if (result && result->isBool() && !result->toBool()) return MaskReader{n, MaskReader::LeakyRelu};
  }
  return c10::nullopt;
}

class Rewriter {
 public:
  // The options were checked (checkCompressionOptions) before the pass ran.
  Rewriter(TrainingIR& ir, const PassOptions& options) : ir_(ir), f_(*ir.forward), b_(*ir.backward) {
    mixed_ = options.boolean("mixed");
    masks_ = options.boolean("masks");
    conv_only_ = options.str("only") == "conv-inputs";
    group_size_ = options.integer("group-size");
    softmax_floor_ = options.integer("softmax-floor");
    product_floor_ = options.integer("product-floor");
    budget_ = options.number("bits");
  }

  void run() {
    // F and B take the state last; B's is added before any new saved value,
    // which addSaved inserts ahead of it.
    state_f_ = f_.addInput("actnn_state");
    state_f_->setType(stateType());
    state_b_ = b_.addInput("actnn_state");
    state_b_->setType(stateType());
    const size_t n = ir_.numSaved();
    std::vector<bool> drop(n, false);
    for (size_t i = 0; i < n; ++i) {
      switch (ir_.saved[i].kind) {
        case SavedKind::Mask: packMask(i); break;
        case SavedKind::PoolIndex: packPoolIndex(i); break;
        case SavedKind::Activation: drop[i] = compressActivation(i); break;
        default: break;
      }
    }
    for (size_t i = n; i-- > 0;) {
      if (!drop[i]) continue;
      f_.eraseOutput(ir_.num_outputs + i);
      b_.eraseInput(ir_.num_outputs + i);
      ir_.saved.erase(ir_.saved.begin() + i);
      ir_.saved_uses.erase(ir_.saved_uses.begin() + i);
    }
    CompressionConfig config;
    config.budget_bits = budget_;
    config.group_size = group_size_;
    config.sites = sites_;
    ir_.compression = config;
  }

 private:
  Value* savedF(size_t i) { return f_.outputs()[ir_.num_outputs + i]; }
  Value* savedB(size_t i) { return b_.inputs()[ir_.num_outputs + i]; }

  // aten::size(v) in F: the one autodiff or this pass already made (moved up
  // to the insert point if it comes later), or a new one there. int[] values
  // are mutable, so CSE would keep the copies.
  Value* sizesOf(Value* v) {
    Node* point = f_.insertPoint();
    for (const auto& use : v->uses()) {
      Node* n = use.user;
      if (n->kind() != c10::aten::size || n->inputs().size() != 1 || n->owningBlock() != f_.block()) continue;
      if (n->isAfter(point)) n->moveBefore(point);
      return n->output();
    }
    return insertValue(f_, c10::aten::size, {v});
  }

  // Adds a new saved value (F output, B input) and returns its B input; a
  // value F saves already is not saved twice.
  Value* addSaved(Value* v, SavedKind kind, const std::string& name) {
    for (size_t k = ir_.num_outputs; k < f_.outputs().size(); ++k)
      if (f_.outputs()[k] == v) return b_.inputs()[k];  // saved already
    if (isConstant(v)) {
      WithInsertPoint guard(b_.block()->nodes().front());
      Value* c = b_.insertConstant(*constantOf(v));
      c->setType(v->type());
      return c;
    }
    f_.registerOutput(v);
    // B inputs: grads, saved..., the state.
    Value* in = b_.insertInput(b_.inputs().size() - 1, v->hasDebugName() ? v->debugName() : "");
    in->setType(v->type());
    ir_.saved.push_back(SavedValue{kind, name});
    ir_.saved_uses.emplace_back();
    return in;
  }

  // Replaces saved value i by `packed` (a forward value); returns B's input,
  // which now has packed's type.
  Value* replaceSaved(size_t i, Value* packed) {
    f_.return_node()->replaceInput(ir_.num_outputs + i, packed);
    Value* in = savedB(i);
    in->setType(packed->type());
    return in;
  }

  void packMask(size_t i) {
    Value* v = savedF(i);
    Value *packed, *sizes;
    {
      WithInsertPoint guard(v->node()->next());
      sizes = sizesOf(v);
      packed = insertValue(f_, actnnOp("pack_mask"), {v});
    }
    Value* in = savedB(i);
    Value* sizes_b = addSaved(sizes, SavedKind::Meta, "sizes of " + ir_.saved[i].name);
    // Unpack before the first reader, then point the readers at the result.
    Node* first = firstUse(in, b_.block());
    replaceSaved(i, packed);
    WithInsertPoint guard(first);
    Value* mask = insertValue(b_, actnnOp("unpack_mask"), {in, sizes_b});
    in->replaceAllUsesAfterNodeWith(mask->node(), mask);
  }

  // The pooling geometry (kernel, stride, padding, dilation) with one entry
  // per spatial dim, as constants: ATen repeats a one-entry list ([3] is 3x3
  // for max_pool2d) and reads an empty stride as the kernel.
  c10::optional<std::vector<Value*>> poolGeometry(Node* pool) {
    const size_t dims = pool->kind() == c10::aten::max_pool3d_with_indices ? 3 : 2;
    std::vector<std::vector<int64_t>> lists;
    for (size_t a = 1; a <= 4; ++a) {
      auto c = constantOf(pool->input(a));
      if (!c || !c->isIntList()) return c10::nullopt;
      std::vector<int64_t> l = c->toIntVector();
      if (a == 2 && l.empty()) l = lists[0];
      if (l.size() == 1) l.assign(dims, l[0]);
      if (l.size() != dims) return c10::nullopt;
      lists.push_back(l);
    }
    std::vector<Value*> out;
    for (const auto& l : lists) out.push_back(f_.insertConstant(l));
    return out;
  }

  void packPoolIndex(size_t i) {
    Value* v = savedF(i);
    Node* pool = v->node();
    Value *packed, *in_sizes, *out_sizes;
    std::vector<Value*> geo;
    {
      WithInsertPoint guard(pool->next());
      auto geometry = poolGeometry(pool);
      if (!geometry) return;  // not constant: the indices stay as they are
      geo = *geometry;
      in_sizes = sizesOf(pool->input(0));
      out_sizes = sizesOf(v);
      packed = insertValue(f_, actnnOp("pack_pool_index"), {v, in_sizes, geo[0], geo[1], geo[2], geo[3]});
    }
    const std::string name = ir_.saved[i].name;  // addSaved grows ir_.saved
    Value* out_b = addSaved(out_sizes, SavedKind::Meta, "output sizes of " + name);
    Value* in_b = addSaved(in_sizes, SavedKind::Meta, "input sizes of " + name);
    std::vector<Value*> geometry;
    for (Value* g : geo) geometry.push_back(addSaved(g, SavedKind::Meta, "geometry of " + name));
    Value* in = savedB(i);
    Node* first = firstUse(in, b_.block());
    replaceSaved(i, packed);
    std::vector<NamedValue> args{in, out_b, in_b};
    for (Value* g : geometry) args.emplace_back(g);
    WithInsertPoint guard(first);
    Value* indices = insertValue(b_, actnnOp("unpack_pool_index"), args);
    in->replaceAllUsesAfterNodeWith(indices->node(), indices);
  }

  // A forward mask of v for one mask reader, saved packed; returns its B
  // value. The mask is set where the reader passes the gradient through
  // unchanged (Threshold, Hardtanh: where it zeroes it).
  Value* readerMask(Value* v, const MaskReader& r, const std::string& name) {
    Value* mask = nullptr;
    {
      WithInsertPoint guard(v->node()->next());
      Node* n = r.node;
      auto fconst = [&](size_t k) { return f_.insertConstant(*constantOf(n->input(k))); };
      switch (r.kind) {
        case MaskReader::Threshold:  // zero where v <= threshold
          mask = insertValue(f_, c10::aten::le, {v, fconst(2)});
          break;
        case MaskReader::NonZero:  // unchanged where v != 0 (v > 0 or NaN)
          mask = v;
          break;
        case MaskReader::Hardtanh:  // zero where v <= min or v >= max
          mask = insertValue(f_, c10::aten::logical_or, {insertValue(f_, c10::aten::le, {v, fconst(2)}),
                                                          insertValue(f_, c10::aten::ge, {v, fconst(3)})});
          break;
        case MaskReader::LeakyRelu:  // unscaled where v > 0
          mask = insertValue(f_, c10::aten::gt, {v, 0});
          break;
      }
      mask = insertValue(f_, actnnOp("pack_mask"), {mask});
    }
    return addSaved(mask, SavedKind::Mask, "mask of " + name);
  }

  // Rewrites reader r of saved value i to use a mask. The reader no longer
  // reads the value (its use is dropped from saved_uses[i]), and any saved
  // use whose gradient was the reader's result now names the replacement.
  void rewriteMaskReader(size_t i, Value* v, const MaskReader& r, const std::string& name) {
    Value* mask = readerMask(v, r, name);
    Node* n = r.node;
    WithInsertPoint guard(n);
    Value* g = n->input(0);
    // One pass from the packed bits: the gradient times (set ? a : b).
    double if_set = 0, if_clear = 1;
    if (r.kind == MaskReader::LeakyRelu) {
      if_set = 1;
      if_clear = constantOf(n->input(2))->toScalar().toDouble();
    } else if (r.kind == MaskReader::NonZero) {
      if_set = 1;
      if_clear = 0;
    }
    // The gradient dies here when this reader is its only use: the runtime
    // may then reuse its buffer.
    const bool donate = g->uses().size() == 1 && g->node()->kind() != c10::prim::Param;
    Value* out = insertValue(b_, actnnOp("scale_by_mask"), {g, mask, if_set, if_clear, donate});
    out->node()->setSourceRange(n->sourceRange());
    auto& own = ir_.saved_uses[i];
    own.erase(std::remove_if(own.begin(), own.end(), [&](const SavedUse& u) { return u.grad == g; }), own.end());
    for (auto& uses : ir_.saved_uses)
      for (auto& u : uses)
        if (u.grad == n->output()) u.grad = out;
    n->output()->replaceAllUsesWith(out);
    n->destroy();
  }

  // Returns true when the value no longer needs saving.
  bool compressActivation(size_t i) {
    Value* v = savedF(i);
    Value* in = savedB(i);
    const std::string name = ir_.saved[i].name;
    if (masks_) {
      std::vector<MaskReader> readers;
      for (const auto& use : in->uses())
        if (auto r = maskReader(use.user, use.offset, v)) readers.push_back(*r);
      for (const auto& r : readers) rewriteMaskReader(i, v, r, name);
    }
    if (!in->hasUses()) return true;
    // The consumer that sets the statistics' geometry: a convolution's
    // weight gives the kernel taps, its channels are dim 1.
    int64_t channel_dim = -1;
    Value* weight = nullptr;
    bool batch_norm = false;
    for (const auto& u : ir_.saved_uses[i]) {
      const auto kind = u.consumer->kind();
      if (kind == c10::aten::convolution && u.consumer->input(0) == v) {
        channel_dim = 1;
        weight = u.consumer->input(1);
      } else if (kind == c10::aten::native_batch_norm || kind == c10::aten::native_group_norm) {
        channel_dim = 1;
        batch_norm = batch_norm || (kind == c10::aten::native_batch_norm && u.consumer->input(0) == v);
      }
    }
    if (conv_only_ && !weight) return false;  // L1: convolution inputs only
    const int64_t site = int64_t(sites_.size());
    const int64_t normalized = normalizedBy(i);
    const auto producer = v->node()->kind();
    const bool softmax = producer == c10::aten::softmax || producer == c10::aten::_softmax;
    const int64_t floor = floorOf(i, v, softmax);
    sites_.push_back({name, mixed_ ? 0 : int64_t(budget_), floor, false, batch_norm, normalized, softmax});
    Value* packed;
    {
      WithInsertPoint guard(v->node()->next());
      Value* w = weight ? weight : f_.insertConstant(c10::IValue());
      packed = insertValue(f_, actnnOp("compress"), {v, state_f_, site, channel_dim, w});
    }
    Node* first = firstUse(in, b_.block());
    replaceSaved(i, packed);
    {
      WithInsertPoint guard(first);
      Value* restored = insertValue(b_, actnnOp("dequantize"), {in});
      in->replaceAllUsesAfterNodeWith(restored->node(), restored);
    }
    if (mixed_) observeGrads(i, site);
    return false;
  }

  // The fewest bits site i's samples get under mixed precision. 1 where the
  // noise stays in a weight gradient, or reaches only GELU's input gradient
  // (through its derivative, in [-0.13, 1.13]: on the GPT of
  // tools/studies/gradient_noise.py, 1 bit there adds 0.004 of SGD's own
  // gradient noise, 2 bits 0.0008); 2 elsewhere (see CompressionState);
  // softmax-floor for softmax outputs, product-floor for the operands of a
  // product of two activations (attention's Q, K and V: their noise reaches
  // the input gradient through the other operand; on that GPT, Q/K/V at 2
  // bits were 0.08 of L3's 0.15, at 4 bits 0.003).
  int64_t floorOf(size_t i, Value* v, bool softmax) {
    if (softmax) return std::max<int64_t>(2, softmax_floor_);
    if (noiseStaysInWeightGrad(i)) return 1;
    bool gelu_only = true, product = false;
    for (const auto& u : ir_.saved_uses[i]) {
      const auto kind = u.consumer->kind();
      gelu_only = gelu_only && kind == c10::aten::gelu;
      product = product || ((kind == c10::aten::mm || kind == c10::aten::matmul || kind == c10::aten::bmm) &&
                            !consumerParameter(u.consumer, v));
    }
    if (gelu_only) return 1;
    return product ? std::max<int64_t>(2, product_floor_) : 2;
  }

  // Whether every reader of saved value i uses it only for a weight gradient
  // (the input of a convolution or of a product with a parameter): its
  // quantization noise then reaches no other gradient, and 1 bit is allowed.
  bool noiseStaysInWeightGrad(size_t i) {
    Value* v = savedF(i);
    for (const auto& u : ir_.saved_uses[i])
      if (!consumerParameter(u.consumer, v)) return false;
    return true;
  }

  // The F input (a lifted parameter) that `consumer` multiplies the saved
  // value `v` with (a convolution's or linear's weight, the other operand of
  // a matrix product), or nullptr.
  static Value* consumerParameter(Node* consumer, Value* v) {
    const auto kind = consumer->kind();
    Value* w = nullptr;
    if ((kind == c10::aten::convolution || kind == c10::aten::linear) && consumer->input(0) == v)
      w = consumer->input(1);
    else if (kind == c10::aten::mm || kind == c10::aten::matmul || kind == c10::aten::bmm)
      w = consumer->input(consumer->input(0) == v ? 1 : 0);
    return w && w->node()->kind() == c10::prim::Param ? w : nullptr;
  }

  // How the runtime measures a site's ranges for the bit allocator: a value
  // read only as the input of batch norms (-1) or of layer norms over the
  // same k trailing dims (k) is weighed in units of the normalized value,
  // which is what those backwards read; otherwise 0 (absolute units).
  int64_t normalizedBy(size_t i) {
    Value* v = savedF(i);
    int64_t mode = 0;
    for (const auto& u : ir_.saved_uses[i]) {
      Node* n = u.consumer;
      int64_t m = 0;
      if (n->kind() == c10::aten::native_batch_norm && n->input(0) == v) {
        m = -1;
      } else if (n->kind() == c10::aten::native_layer_norm && n->input(0) == v) {
        const auto shape = constantOf(n->input(1));
        if (shape && shape->isIntList()) m = int64_t(shape->toIntVector().size());
      }
      if (m == 0 || (mode != 0 && m != mode)) return 0;
      mode = m;
    }
    return mode;
  }

  void observeGrads(size_t i, int64_t site) {
    for (const auto& u : ir_.saved_uses[i]) {
      Value* g = u.grad;
      if (!g || !g->type()->isSubtypeOf(*c10::TensorType::get())) continue;
      Node* point = g->node()->kind() == c10::prim::Param ? b_.block()->nodes().front() : g->node()->next();
      WithInsertPoint guard(point);
      Value* seen = insertValue(b_, actnnOp("observe_grad"), {g, state_b_, site});
      g->replaceAllUsesAfterNodeWith(seen->node(), seen);
    }
  }

  TrainingIR& ir_;
  Graph& f_;
  Graph& b_;
  bool mixed_ = false, masks_ = true, conv_only_ = false;
  int64_t group_size_ = 256;
  double budget_ = 4;
  int64_t softmax_floor_ = 4;
  int64_t product_floor_ = 4;
  Value* state_f_ = nullptr;
  Value* state_b_ = nullptr;
  std::vector<CompressionConfig::Site> sites_;
};

class InsertCompression : public Pass {
 public:
  InsertCompression() {
    options_.declare("bits", "4", "width of quantized activations (1, 2, 4, 8); with mixed=true the average budget");
    options_.declare("mixed", "false", "mixed precision across layers and samples under the `bits` budget");
    options_.declare("only", "all", "all | conv-inputs: which activations are quantized");
    options_.declare("group-size", "256", "values per quantization group (a multiple of 32)");
    options_.declare("masks", "true", "store relu / hardtanh / leaky_relu readers' operands as 1-bit masks");
    // 4: see the README's "Training quality" (a causal softmax row is mostly
    // near-zero weights, stored at a step of a third of the row's maximum
    // at 2 bits; the allocator's cost bounds a linear consumer's weight
    // gradient, not softmax's backward).
    options_.declare("softmax-floor", "4", "fewest bits (1, 2, 4, 8) a softmax output gets under mixed precision");
    // 4: see floorOf and the README's "Training quality".
    options_.declare("product-floor", "4",
                     "fewest bits (1, 2, 4, 8) an operand of a product of two activations (attention's Q, K, V) gets "
                     "under mixed precision");
  }

  void checkOptions() const override {
    const std::string& only = options_.str("only");
    if (only != "all" && only != "conv-inputs")
      throw CompileError("option only expects all or conv-inputs, got '" + only + "'");
    const bool mixed = options_.boolean("mixed");  // throws naming the option
    options_.boolean("masks");
    const int64_t group_size = options_.integer("group-size");
    if (group_size <= 0 || group_size % 32 != 0)
      throw CompileError("option group-size must be a positive multiple of 32, got " + std::to_string(group_size));
    for (const char* name : {"softmax-floor", "product-floor"}) {
      const int64_t floor = options_.integer(name);
      if (!(floor == 1 || floor == 2 || floor == 4 || floor == 8))
        throw CompileError(std::string("option ") + name + " must be 1, 2, 4 or 8, got " + options_.str(name));
    }
    const std::string& bits = options_.str("bits");
    const double budget = options_.number("bits");
    if (mixed ? !(budget >= 1 && budget <= 8) : !(budget == 1 || budget == 2 || budget == 4 || budget == 8))
      throw CompileError(mixed ? "option bits (the mixed-precision budget) must be in [1, 8], got " + bits
                               : "option bits must be 1, 2, 4 or 8 (or any budget in [1, 8] with mixed=true), got " +
                                     bits);
  }

  bool run(TrainingIR& ir, Diagnostics& diag) override {
    if (!ir.forward) {
      diag.error("the pipeline has no training graphs yet; run autodiff and saved-set first");
      return false;
    }
    if (ir.compression) {
      diag.error("the training graphs are compressed already");
      return false;
    }
    if (ir.saved.size() != ir.numSaved()) {
      diag.error("the saved set is not classified; run saved-set first");
      return false;
    }
    Rewriter rewriter(ir, options_);
    rewriter.run();
    for (auto* g : {&ir.forward, &ir.backward}) {
      torch::jit::EliminateCommonSubexpression(*g);
      torch::jit::ConstantPooling(*g);
    }
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> createInsertCompressionPass() { return std::make_unique<InsertCompression>(); }

}  // namespace actnn
