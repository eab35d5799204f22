// reuse-buffers (L1-L5): let B write gradients into buffers that die where
// they are read, so a layer's backward holds fewer activation-sized tensors
// at once. After insert-compression, every activation B reads is a fresh
// tensor from actnn::dequantize that B alone holds; gradients are B's own.
// Rewrites keyed on a value's last use in B's top-level block:
//
// 1. Sums of gradients: aten::add(%a, %b, 1) becomes
//    actnn::add_grads(%a, %b, donate_a, donate_b), which adds into an operand
//    read here for the last time instead of allocating the sum.
//
// 2. A convolution whose input %x B made (dequantized), and which needs the
//    input gradient and the weight (or bias) gradient:
//      %gx, %gw, %gb = aten::convolution_backward(%g, %x, %w, ..., [1, 1, 1])
//    computes the weight and bias gradients first, so %x can die before the
//    input gradient is allocated: the input-gradient call follows right
//    after, or, when another op reads %x later (the shortcut convolution
//    of a ResNet block reads the block input too), moves to right before
//    the first reader of %gx. That second call needs a tensor of %x's
//    shape whose values it does not read (tests/unit/buffer_reuse_test.cpp
//    checks ATen's backends never read them):
//      %n = aten::size(%x)   (and prim::dtype, prim::device)
//      %_, %gw, %gb = aten::convolution_backward(%g, %x, %w, ..., [0, 1, 1])
//      %gx, %_, %_ = aten::convolution_backward(%g, actnn::placeholder(%other, %n, ...), %w, ..., [1, 0, 0])
//    When %gx goes to a sum with a gradient %other made earlier (a ResNet
//    block's input gradient), %other has %x's shape and stands in for it;
//    otherwise the placeholder is, on the CPU, address space with no memory
//    behind it. Either way a ResNet block's input gradient needs %other and
//    %gx alive, not %other, %x and %gx.
//
// 3. Batch-norm backward whose input %x is read nowhere else becomes
//    actnn::batch_norm_backward(..., donate_input=True), which writes the
//    input gradient over %x (debias-backward's actnn::batch_norm_backward
//    gets donate_input=True).
//
// 4. With chunk-bytes > 0 (L5), every convolution backward becomes
//    actnn::convolution_backward(..., chunk_bytes): on the CPU it runs over
//    slices of the batch, because oneDNN copies its operands into blocked
//    layouts for the call (measured: a 64x256x16x16 1x1 convolution's
//    backward holds 25 MB of such copies next to its 17 MB input), and those
//    copies are then a slice's size. It costs more, smaller calls, so it is
//    L5's (the level that trades time for the largest batch).
//
// The runtime overwrites a donated tensor only when nothing else holds it,
// so a donation that does not hold at run time costs memory, not results.
#include <unordered_set>

#include "actnn/passes/ir_builder.h"
#include "actnn/passes/pass.h"

namespace actnn {
namespace {

using torch::jit::Block;
using torch::jit::NamedValue;
using torch::jit::Node;
using torch::jit::Value;

// Whether `at` (a node of `block`) is the last reader of v: no use after it.
bool lastReadAt(Value* v, Node* at, Block* block) {
  for (const auto& use : v->uses()) {
    Node* user = topLevelNode(use.user, block);
    if (user != at && at->isBefore(user)) return false;
  }
  return true;
}

// A value B made itself (not one of its inputs) and reads for the last time
// at `at`, exactly once there.
bool diesAt(Value* v, Node* at, Block* block) {
  if (v->node()->kind() == c10::prim::Param) return false;
  size_t reads = 0;
  for (const auto& use : v->uses())
    if (topLevelNode(use.user, block) == at) ++reads;
  return reads == 1 && lastReadAt(v, at, block);
}

bool isTensor(const Value* v) { return v->type()->isSubtypeOf(*c10::TensorType::get()); }

// aten::add(Tensor, Tensor, alpha=1).
bool isPlainSum(Node* n) {
  if (n->kind() != c10::aten::add || n->inputs().size() != 3 || !isTensor(n->input(0)) || !isTensor(n->input(1)))
    return false;
  auto alpha = constantInt(n->input(2));
  return alpha && *alpha == 1;
}

// The gradient that can stand in for conv's input in its input-gradient
// call placed before `at`: the other operand of the sum that gradient goes
// to (the gradient of the same value, so of the same shape), when it exists
// by then.
Value* donorFor(Node* conv, Node* at, Block* block) {
  Value* gx = conv->output(0);
  if (gx->uses().size() != 1 || !isPlainSum(gx->uses()[0].user)) return nullptr;
  Node* sum = gx->uses()[0].user;
  Value* other = sum->input(0) == gx ? sum->input(1) : sum->input(0);
  if (other->node()->kind() != c10::prim::Param && !topLevelNode(other->node(), block)->isBefore(at)) return nullptr;
  return other;
}

// The first node of `block` that reads v.
Node* firstReader(Value* v, Block* block) {
  Node* first = nullptr;
  for (const auto& use : v->uses()) {
    Node* user = topLevelNode(use.user, block);
    if (!first || user->isBefore(first)) first = user;
  }
  return first;
}

// Rewrite 2, for a convolution whose input B made.
bool splitConvolution(Node* conv, Block* block) {
  if (conv->kind() != c10::aten::convolution_backward || conv->owningBlock() != block) return false;
  Value* x = conv->input(1);
  if (x->node()->kind() == c10::prim::Param || !conv->output(0)->hasUses()) return false;
  auto mask = constantOf(conv->inputs().back());
  if (!mask || !mask->isBoolList()) return false;
  const c10::List<bool> bits = mask->toBoolList();
  if (bits.size() != 3 || !bits[0] || !(bits[1] || bits[2])) return false;
  // Where the input-gradient call goes: right after the weight call when %x
  // dies there; otherwise (another op reads %x later, as a ResNet block's
  // shortcut convolution does) right before its first reader, so that it
  // is allocated after %x's last reader has run.
  Node* reader = firstReader(conv->output(0), block);
  Node* input_at = lastReadAt(x, conv, block) ? conv : reader;

  auto& graph = *block->owningGraph();
  const auto range = conv->sourceRange();
  Node *weights = nullptr, *input = nullptr;
  {
  torch::jit::WithInsertPoint guard(conv);
  std::vector<NamedValue> args;
  for (Value* in : conv->inputs()) args.emplace_back(in);
  args.back() = NamedValue(graph.insertConstant(c10::IValue(std::vector<bool>{false, bits[1], bits[2]})));
  Value* sizes = insertValue(graph, c10::aten::size, {x}, range);
  Value* dtype = insertValue(graph, c10::prim::dtype, {x}, range);
  Value* device = insertValue(graph, c10::prim::device, {x}, range);
  weights = insertOp(graph, c10::aten::convolution_backward, args, range);
  torch::jit::WithInsertPoint later(input_at);
  Value* donor = donorFor(conv, input_at, block);
  if (!donor) {
    donor = graph.insertConstant(c10::IValue());
    donor->setType(c10::OptionalType::create(c10::TensorType::get()));
  }
  args[1] = NamedValue(insertValue(graph, actnnOp("placeholder"), {donor, sizes, dtype, device}, range));
  args.back() = NamedValue(graph.insertConstant(c10::IValue(std::vector<bool>{true, false, false})));
  input = insertOp(graph, c10::aten::convolution_backward, args, range);
  }
  conv->output(0)->replaceAllUsesWith(input->output(0));
  conv->output(1)->replaceAllUsesWith(weights->output(1));
  conv->output(2)->replaceAllUsesWith(weights->output(2));
  conv->destroy();
  return true;
}

// Rewrite 4 (chunk-bytes > 0): convolution backward over slices of the batch.
void chunkConvolution(Node* conv, int64_t chunk_bytes, Block* block) {
  std::vector<NamedValue> args(conv->inputs().begin(), conv->inputs().end());
  args.emplace_back(chunk_bytes);
  replaceNode(conv, *block->owningGraph(), actnnOp("convolution_backward"), args);
}

void donateSum(Node* sum, Block* block) {
  replaceNode(sum, *block->owningGraph(), actnnOp("add_grads"),
              {sum->input(0), sum->input(1), diesAt(sum->input(0), sum, block), diesAt(sum->input(1), sum, block)});
}

bool donateBatchNormInput(Node* n, Block* block) {
  auto train = constantOf(n->input(7));
  if (!train || !train->isBool() || !train->toBool() || !diesAt(n->input(1), n, block)) return false;
  auto& graph = *block->owningGraph();
  if (n->kind() == actnnOp("batch_norm_backward")) {  // debias-backward's: set its donate_input
    torch::jit::WithInsertPoint guard(n);
    n->replaceInput(10, graph.insertConstant(true));
    return true;
  }
  std::vector<NamedValue> args(n->inputs().begin(), n->inputs().end());
  args.emplace_back(true);
  replaceNode(n, graph, actnnOp("batch_norm_backward"), args);
  return true;
}

class ReuseBuffers : public Pass {
 public:
  ReuseBuffers() {
    options_.declare("chunk-bytes", "0",
                     "CPU convolution backward over batch slices of at most this many input bytes (0: whole batch)");
  }

  void checkOptions() const override {
    const int64_t chunk_bytes = options_.integer("chunk-bytes");
    if (chunk_bytes < 0) throw CompileError("option chunk-bytes must be >= 0, got " + std::to_string(chunk_bytes));
  }

  bool run(TrainingIR& ir, Diagnostics& diag) override {
    if (!ir.backward || !ir.compression) {
      diag.error("nothing is dequantized in B yet; run insert-compression first");
      return false;
    }
    const int64_t chunk_bytes = options_.integer("chunk-bytes");
    Block* block = ir.backward->block();
    std::vector<Node*> convs, norms, sums;
    for (Node* n : block->nodes()) {
      if (n->kind() == c10::aten::convolution_backward) convs.push_back(n);
      if ((n->kind() == c10::aten::native_batch_norm_backward && n->inputs().size() == 10) ||
          n->kind() == actnnOp("batch_norm_backward"))
        norms.push_back(n);
    }
    bool changed = false;
    for (Node* n : convs) changed |= splitConvolution(n, block);
    for (Node* n : norms) changed |= donateBatchNormInput(n, block);
    for (Node* n : block->nodes())
      if (isPlainSum(n)) sums.push_back(n);
    for (Node* sum : sums) donateSum(sum, block);
    if (chunk_bytes > 0) {
      convs.clear();
      for (Node* n : block->nodes())
        if (n->kind() == c10::aten::convolution_backward) convs.push_back(n);
      for (Node* n : convs) chunkConvolution(n, chunk_bytes, block);
      changed |= !convs.empty();
    }
    return changed || !sums.empty();
  }
};

}  // namespace

std::unique_ptr<Pass> createReuseBuffersPass() { return std::make_unique<ReuseBuffers>(); }

}  // namespace actnn
