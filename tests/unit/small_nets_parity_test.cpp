// L0 gradient parity on our own small nets (tests/models/export_small_nets.py,
// scripted at test time, random weights, train mode), which together cover
// every derivative rule: loss, parameter, input and buffer values of the
// compiled module equal LibTorch autograd's on the original (relative error
// <= 1e-5, fp32), also after a save/load round trip. Integer inputs (class
// targets) are passed as they are and never require grad.
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/import.h>

#include <ATen/ATen.h>

#include <fstream>
#include <set>
#include <sstream>

#include "actnn/actnn.h"
#include "parity_util.h"
#include "rules/rules.h"

namespace {

// Keep in step with NETS in export_small_nets.py (SmallNets.EveryExportedNetIsTested checks).
const char* const kNets[] = {"conv1d",      "conv2d",        "conv3d",           "conv_transpose", "linear",
                             "matmul",      "norm",          "residual",         "activations",    "pool1d",
                             "pool2d",      "pool3d",        "reductions",       "elementwise",    "shapes",
                             "dropout",     "softmax",       "cross_entropy",    "cross_entropy_nd", "nll_loss",
                             "mse_loss",    "outputs",       "onnx_lowerings",   "containers",       "upsample",
                             "upsample_per_dim",
                             "indexing",    "view_writes", "fallback",         "pointwise_math",   "selections",
                             "gather_scatter", "pads_grid",  "branches",         "gpt_block",        "llama_block",
                             "bert_block"};

std::string modelPath(const std::string& name, const std::string& suffix = ".pt") {
  return std::string(ACTNN_TEST_MODELS_DIR) + "/" + name + suffix;
}

std::vector<std::string> readLines(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path << " (run export_small_nets.py)";
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

// The forward inputs of a net from its "<name>.inputs" spec: `float 2x4x16`
// (standard normal) or `long 8 5` (integers in [0, 5)).
std::vector<at::Tensor> makeInputs(const std::string& name, uint64_t seed) {
  at::manual_seed(seed);
  std::vector<at::Tensor> inputs;
  for (const auto& line : readLines(modelPath(name, ".inputs"))) {
    std::istringstream fields(line);
    std::string dtype, shape_text;
    fields >> dtype >> shape_text;
    std::vector<int64_t> shape;
    std::istringstream dims(shape_text);
    for (std::string d; std::getline(dims, d, 'x');) shape.push_back(std::stoll(d));
    if (dtype == "float") {
      inputs.push_back(at::randn(shape));
    } else {
      int64_t high = 0;
      fields >> high;
      EXPECT_EQ(dtype, "long") << line;
      inputs.push_back(at::randint(0, high, shape, at::kLong));
    }
  }
  return inputs;
}

actnn::Options level0() {
  actnn::Options options;
  options.level = "L0";
  return options;
}

void expectParity(const actnn::testing::ParityReport& r) {
  for (const auto& p : r.problems) ADD_FAILURE() << p;
  EXPECT_LE(r.worst, 1e-5) << "worst: " << r.worst_name;
}

class SmallNetParity : public ::testing::TestWithParam<const char*> {};

TEST_P(SmallNetParity, GradientsEqualAutograd) {
  torch::jit::Module reference = torch::jit::load(modelPath(GetParam()));
  torch::jit::Module compiled = actnn::compile(torch::jit::load(modelPath(GetParam())), level0());
  expectParity(actnn::testing::compareTrainingStep(reference, compiled, makeInputs(GetParam(), 0), 7));
}

TEST_P(SmallNetParity, GradientsEqualAutogradAfterSaveLoad) {
  torch::jit::Module reference = torch::jit::load(modelPath(GetParam()));
  std::string archive = modelPath(GetParam(), ".actnn.pt");
  actnn::compile(torch::jit::load(modelPath(GetParam())), level0()).save(archive);
  torch::jit::Module loaded = torch::jit::load(archive);
  expectParity(actnn::testing::compareTrainingStep(reference, loaded, makeInputs(GetParam(), 1), 11));
}

// Every rule's saved values take the compressed path too: at L3 and L5 each
// net computes the same forward result as the original (compression only
// touches what backward reads) and gives every parameter and input that
// autograd gives a gradient a finite one.
TEST_P(SmallNetParity, TrainsAtCompressedLevels) {
  torch::jit::Module reference = torch::jit::load(modelPath(GetParam()));
  const std::vector<at::Tensor> inputs = makeInputs(GetParam(), 2);
  std::vector<c10::IValue> args(inputs.begin(), inputs.end());
  at::manual_seed(3);
  const c10::IValue expected = reference.forward(args);
  for (const char* level : {"L3", "L5"}) {
    SCOPED_TRACE(level);
    actnn::Options options;
    options.level = level;
    torch::jit::Module compiled = actnn::compile(torch::jit::load(modelPath(GetParam())), options);
    std::vector<c10::IValue> xs;
    for (const auto& x : inputs) xs.emplace_back(x.detach().clone().requires_grad_(x.is_floating_point()));
    at::manual_seed(3);
    const c10::IValue result = compiled.forward(xs);
    std::vector<at::Tensor> got, want;
    actnn::testing::flattenTensors(result, got);
    actnn::testing::flattenTensors(expected, want);
    ASSERT_EQ(got.size(), want.size());
    at::Tensor loss = at::zeros({});
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_LE(actnn::testing::relativeError(got[i], want[i]), 1e-6) << "output " << i;
      if (got[i].is_floating_point()) loss = loss + (got[i] * got[i]).sum();
    }
    loss.backward();
    for (const auto& p : compiled.named_parameters()) {
      if (!p.value.requires_grad()) continue;
      ASSERT_TRUE(p.value.grad().defined()) << p.name;
      EXPECT_TRUE(at::isfinite(p.value.grad()).all().item<bool>()) << p.name;
    }
    for (const auto& x : xs)
      if (x.toTensor().requires_grad()) EXPECT_TRUE(at::isfinite(x.toTensor().grad()).all().item<bool>());
  }
}

INSTANTIATE_TEST_SUITE_P(Nets, SmallNetParity, ::testing::ValuesIn(kNets),
                         [](const ::testing::TestParamInfo<const char*>& info) { return std::string(info.param); });

// The branches net branches on x.mean() > 0 and, inside, on y.sum() > 0:
// both are differentiated per branch (no fallback), and one compiled module,
// in one process, takes every path with autograd's gradients, at L0 and
// (finite gradients, the forward unchanged) at L3.
TEST(SmallNetsBranches, DataDependentIfsTakeEveryPath) {
  const auto inputs = makeInputs("branches", 3);
  const at::Tensor x = inputs.at(0).abs(), y = inputs.at(1).abs();
  torch::jit::Module compiled = actnn::compile(torch::jit::load(modelPath("branches")), level0());
  EXPECT_EQ(compiled.attr("_actnn_branch_ops").toInt(), 2);
  EXPECT_EQ(compiled.attr("_actnn_fallback_ops").toInt(), 0);
  const std::vector<std::pair<at::Tensor, at::Tensor>> paths = {{x, y}, {x, -y}, {-x, y}, {x, y}};
  // Step for step with one reference: batch norm's running statistics move
  // only on the steps whose branch runs it, in both.
  torch::jit::Module reference = torch::jit::load(modelPath("branches"));
  for (const auto& [px, py] : paths) {
    SCOPED_TRACE(std::string(px.mean().item<double>() > 0 ? "x > 0" : "x < 0") +
                 (py.sum().item<double>() > 0 ? ", y > 0" : ", y < 0"));
    expectParity(actnn::testing::compareTrainingStep(reference, compiled, {px, py}, 5));
  }
  actnn::Options l3;
  l3.level = "L3";
  torch::jit::Module compressed = actnn::compile(torch::jit::load(modelPath("branches")), l3);
  for (const auto& [px, py] : paths) {
    const at::Tensor gx = px.clone().requires_grad_(), gy = py.clone().requires_grad_();
    auto outs = compressed.forward({gx, gy}).toTuple()->elements();
    (outs[0].toTensor().square().sum() + outs[1].toTensor()).backward();
    EXPECT_TRUE(at::isfinite(gx.grad()).all().item<bool>());
    EXPECT_TRUE(at::isfinite(gy.grad()).all().item<bool>());
  }
}

// The fallback net branches on x.sum() > 0 (under the autograd fallback):
// one compiled module, in one process, takes both branches, each with
// autograd's gradients; and B never runs a branch F did not take.
TEST(SmallNetsFallback, DataDependentIfTakesBothBranches) {
  torch::jit::Module reference = torch::jit::load(modelPath("fallback"));
  torch::jit::Module compiled = actnn::compile(torch::jit::load(modelPath("fallback")), level0());
  at::Tensor x = makeInputs("fallback", 3).at(0);
  for (const at::Tensor& input : {x.abs(), -x.abs(), x.abs()}) {
    SCOPED_TRACE(input.sum().item<double>() > 0 ? "then-branch" : "else-branch");
    expectParity(actnn::testing::compareTrainingStep(reference, compiled, {input}, 5));
  }
}

TEST(SmallNets, EveryExportedNetIsTested) {
  std::set<std::string> tested(std::begin(kNets), std::end(kNets));
  for (const auto& name : readLines(modelPath("small_nets", ".list")))
    EXPECT_TRUE(tested.count(name)) << name << " is exported but not in kNets";
}

// Every rule fires on some net: a rule with a `lower` matches a node of the
// canonical graph, the rest a node of the forward graph F after lowering.
// Except aten::rsub.Tensor, which only graph text (.tsir) can hold: the
// TorchScript frontend emits torch.rsub(a, b) on tensors as aten::sub(b, a);
// and aten::to.dtype_layout, which only torch.export's programs hold (the
// frontend resolves to(device=, dtype=) to to.device): tests/python/
// test_export.py covers it.
//
// The upsampling ops have two overloads with rules, `.vec` and one with
// per-dim scales, and an archive's code calls them positionally: which one a
// call resolves to depends on the LibTorch that loads it (1.13 takes `.vec`
// where the arity allows, 2.x the per-dim one). For them, a rule of either
// overload exercised counts for both (the small nets upsample and
// upsample_per_dim reach each one under one LibTorch or the other).
TEST(SmallNets, TogetherExerciseEveryDerivativeRule) {
  const std::set<std::string> unreachable_from_modules = {"aten::rsub.Tensor", "aten::to.dtype_layout"};
  std::set<const actnn::rules::RuleSpec*> used;
  std::set<c10::Symbol> used_kinds;
  for (const char* name : kNets) {
    actnn::TrainingIR ir = actnn::TrainingIR::fromModule(torch::jit::load(modelPath(name)));
    actnn::runPipelineText(actnn::pipelineFor(level0()), ir);
    for (const auto* graph : {ir.graph.get(), ir.forward.get()})
      for (const auto* node : graph->nodes())
        if (const auto* rule = actnn::rules::findRule(node)) {
          used.insert(rule);
          used_kinds.insert(node->kind());
        }
  }
  for (const auto& [kind, rules] : actnn::rules::ruleTable()) {
    const bool overloads_by_loader = std::string(kind.toUnqualString()).rfind("upsample_", 0) == 0;
    for (const auto& rule : rules)
      EXPECT_TRUE(used.count(&rule) || unreachable_from_modules.count(rule.schema) ||
                  (overloads_by_loader && used_kinds.count(kind)))
          << rule.schema << " is exercised by no small net";
  }
}

}  // namespace
