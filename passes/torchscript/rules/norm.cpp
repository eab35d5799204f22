// Batch, layer and group norm. The composite ops are lowered to their native
// forms so that the statistics backward needs (mean, invstd / rstd) become
// forward values; batch norm's in-place running-statistics update stays in
// native_batch_norm, on the module's own buffers.
#include "actnn/passes/ir_builder.h"
#include "rules.h"

namespace actnn {
namespace rules {
namespace {

bool isConstTrue(Value* v) {
  auto c = torch::jit::toIValue(v);
  return c && c->isBool() && c->toBool();
}

Value* optionalSave(RuleContext& c, Value* v) {
  return v->type()->kind() == c10::TypeKind::NoneType ? c.none() : c.save(v);
}

Value* mask3(RuleContext& c, size_t a, size_t b, size_t d) {
  return c.constant(std::vector<bool>{c.needsGrad(a), c.needsGrad(b), c.needsGrad(d)});
}

}  // namespace

void registerNormRules(std::vector<RuleSpec>& rules) {
  using namespace c10;
  rules.push_back({"aten::batch_norm",
                   [](Node* n, Graph& f) {
                     return replaceNode(n, f, aten::native_batch_norm,
                                        {n->input(0), n->input(1), n->input(2), n->input(3), n->input(4),
                                         n->input(5), n->input(6), n->input(7)});
                   },
                   nullptr});
  // native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps)
  rules.push_back({"aten::native_batch_norm", nullptr, [](RuleContext& c) {
    bool train = isConstTrue(c.input(5));
    // In training mode backward reads the batch statistics only; the running
    // statistics (updated in place) are not saved.
    auto n = c.opNode(aten::native_batch_norm_backward,
                      {c.grad(0), c.save(c.input(0)), optionalSave(c, c.input(1)),
                       train ? c.none() : optionalSave(c, c.input(3)),
                       train ? c.none() : optionalSave(c, c.input(4)), c.save(c.output(1)),
                       c.save(c.output(2)), c.save(c.input(5)), c.save(c.input(7)), mask3(c, 0, 1, 2)});
    for (size_t i = 0; i < 3; ++i) c.setGrad(i, n->output(i));
  }});
  rules.push_back({"aten::layer_norm",
                   [](Node* n, Graph& f) {
                     return replaceNode(n, f, aten::native_layer_norm,
                                        {n->input(0), n->input(1), n->input(2), n->input(3), n->input(4)});
                   },
                   nullptr});
  // native_layer_norm(input, normalized_shape, weight, bias, eps) -> (out, mean, rstd)
  rules.push_back({"aten::native_layer_norm", nullptr, [](RuleContext& c) {
    auto n = c.opNode(aten::native_layer_norm_backward,
                      {c.grad(0), c.save(c.input(0)), c.save(c.input(1)), c.save(c.output(1)),
                       c.save(c.output(2)), optionalSave(c, c.input(2)), optionalSave(c, c.input(3)),
                       mask3(c, 0, 2, 3)});
    c.setGrad(0, n->output(0));
    c.setGrad(2, n->output(1));
    c.setGrad(3, n->output(2));
  }});
  // group_norm(input, num_groups, weight, bias, eps, cudnn_enabled)
  rules.push_back({"aten::group_norm",
                   [](Node* n, Graph& f) {
                     Value* x = n->input(0);
                     Value *batch, *channels, *hxw;
                     {
                       // Scoped: the guard must not outlive n, which replaceNode destroys.
                       torch::jit::WithInsertPoint guard(n);
                       Value* sizes = insertValue(f, aten::size, {x});
                       batch = insertValue(f, aten::size, {x, 0});
                       channels = insertValue(f, aten::size, {x, 1});
                       hxw = torch::jit::insertGraph(f, *helperGraph("group_norm_hxw"), {sizes}).at(0);
                     }
                     return replaceNode(n, f, aten::native_group_norm,
                                        {x, n->input(2), n->input(3), batch, channels, hxw, n->input(1),
                                         n->input(4)});
                   },
                   nullptr});
  // native_group_norm(input, weight, bias, N, C, HxW, group, eps) -> (out, mean, rstd)
  rules.push_back({"aten::native_group_norm", nullptr, [](RuleContext& c) {
    auto n = c.opNode(aten::native_group_norm_backward,
                      {c.grad(0), c.save(c.input(0)), c.save(c.output(1)), c.save(c.output(2)),
                       optionalSave(c, c.input(1)), c.save(c.input(3)), c.save(c.input(4)), c.save(c.input(5)),
                       c.save(c.input(6)), mask3(c, 0, 1, 2)});
    for (size_t i = 0; i < 3; ++i) c.setGrad(i, n->output(i));
  }});
}

}  // namespace rules
}  // namespace actnn
