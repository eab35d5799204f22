// Unbiased gradients through the readers debias-backward corrects, on the
// STAT_NETS of tests/models/export_small_nets.py: stats_norms (batch norm
// over 288 and 72 values per channel, group norm, SiLU) and
// stats_transformer (layer norm, GELU, softmax, tanh, sigmoid). Each level
// runs 256 backward passes that differ only in the quantization seed
// (tools/lib/gradient_stats.h); the squared bias of the whole gradient is
// judged by its z-score against the spread of an unbiased gradient, and so is
// that of each kind of parameter (conv, norm, linear). The seeds are fixed,
// so the test is deterministic; the same measurement without debias-backward
// must fail it (the check has power), and the correction must not raise the
// single-pass standard deviation by more than 10%.
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/import.h>

#include <cmath>
#include <string>

#include "actnn/actnn.h"
#include "actnn/runtime/ops.h"
#include "bench_models.h"
#include "gradient_stats.h"

namespace {

using actnn::tools::GradientStats;

constexpr int64_t kPasses = 256;
// An unbiased gradient's z-score is about N(0, 1); 4 leaves room for the
// block estimate of its standard error, 6 for the power check.
constexpr double kUnbiasedZ = 4;
constexpr double kBiasedZ = 6;

struct Measured {
  GradientStats debiased, biased;
};

Measured measure(const std::string& net, at::IntArrayRef input_shape) {
  const std::string path = std::string(ACTNN_TEST_MODELS_DIR) + "/" + net + ".pt";
  torch::jit::Module original = torch::jit::load(path);
  const auto kinds = actnn::tools::parameterKinds(original);
  at::Generator gen = at::detail::createCPUGenerator(5);
  const at::Tensor x = at::randn(input_shape, gen);
  at::Tensor targets;
  {
    at::NoGradGuard no_grad;
    original.eval();
    targets = actnn::tools::stepTargets(original.forward({x}).toTensor(), 7);
  }
  actnn::Options l0;
  l0.level = "L0";
  torch::jit::Module reference = actnn::compile(torch::jit::load(path), l0);
  const auto exact = actnn::tools::stepGradients(reference, x, targets, 1000);
  auto run = [&](const std::string& level) {
    torch::jit::Module m = actnn::compile(torch::jit::load(path), actnn::tools::levelVariant(level));
    return actnn::tools::measureGradients(m, exact, kinds, x, targets, kPasses, 1000);
  };
  return {run("L3"), run("L3-biased")};
}

void expectDebiased(const Measured& m, const std::vector<std::string>& biased_groups) {
  const auto& all = m.debiased.groups.at("all");
  EXPECT_LT(all.bias_z, kUnbiasedZ) << "bias " << all.relative_bias() << " of |g| (z " << all.bias_z << ")";
  for (const auto& [group, s] : m.debiased.groups) {
    std::printf("[ %-6s L3 bias %.4f (z %6.2f), std %.4f | without debias-backward: bias %.4f (z %6.2f), std %.4f ]\n",
                group.c_str(), s.relative_bias(), s.bias_z, s.relative_std(), m.biased.groups.at(group).relative_bias(),
                m.biased.groups.at(group).bias_z, m.biased.groups.at(group).relative_std());
  }
  // Per kind of parameter too: the sites these readers read are dithered, so
  // the correction uses each value's exact noise variance (step^2 / 12), and
  // no bias is left to detect in any kind.
  for (const auto& group : biased_groups) {
    const auto& before = m.biased.groups.at(group);
    EXPECT_GT(before.bias_z, kBiasedZ) << group << ": the uncorrected level should be biased";
    EXPECT_LT(m.debiased.groups.at(group).bias_z, kUnbiasedZ) << group;
  }
  EXPECT_LE(m.debiased.groups.at("all").relative_std(), 1.1 * m.biased.groups.at("all").relative_std());
  // The error of the mean falls like 1/sqrt(k): within 10% of sigma / sqrt(k)
  // up to k = 64 (k = 256, a single block, is left out).
  const double sigma = m.debiased.groups.at("all").relative_std();
  for (const auto& [k, err] : m.debiased.error_of_mean)
    if (k <= 64) EXPECT_NEAR(err / (sigma / std::sqrt(double(k))), 1.0, 0.1) << "k = " << k;
}

TEST(GradientBias, NormsAreUnbiased) {
  // Batch 8: bn1 normalizes 288 values per channel (2 bits), bn2 72 (under
  // CompressionState::kSmallCount: 4 bits).
  const Measured m = measure("stats_norms", {8, 3, 6, 6});
  expectDebiased(m, {"all", "conv", "norm"});
}

TEST(GradientBias, TransformerReadersAreUnbiased) {
  const Measured m = measure("stats_transformer", {4, 2, 16, 16});
  expectDebiased(m, {"all", "norm", "linear"});
}

// rounding_variance: step^2 / 6 per group from the stored scale (step^2 / 12
// when dithered); 0 for a constant group, which round-trips exactly.
TEST(GradientBias, RoundingVarianceIsStepSquaredOverSixOrTwelve) {
  at::Generator gen = at::detail::createCPUGenerator(3);
  at::Tensor x = at::randn({2, 512}, gen);
  x.narrow(1, 256, 256).fill_(1.5);
  auto p = actnn::quantize(x, {2}, 256, 1, 0);
  const at::Tensor v = actnn::rounding_variance(*p);
  const at::Tensor step = p->scale.to(at::kFloat).reciprocal();
  EXPECT_TRUE(at::allclose(v.select(1, 0), (step * step / 6).select(1, 0)));
  EXPECT_EQ(v.select(1, 1).abs().max().item<float>(), 0.0f);
  p->dither = true;  // subtractive dither: step^2 / 12, exactly
  EXPECT_TRUE(at::allclose(actnn::rounding_variance(*p).select(1, 0), (step * step / 12).select(1, 0)));
}

// Our batch-norm kernel's correction equals the composite one (ATen's
// backward plus dy * v * w invstd^3 / M), which double inputs take.
TEST(GradientBias, BatchNormKernelMatchesComposite) {
  at::Generator gen = at::detail::createCPUGenerator(4);
  const at::Tensor x = at::randn({4, 6, 5, 7}, gen) * 3 + 1;
  const at::Tensor dy = at::randn({4, 6, 5, 7}, gen);
  const at::Tensor w = at::rand({6}, gen) + 0.5;
  auto p = actnn::quantize(x, {2}, 64, 9, 0);
  const at::Tensor xq = actnn::dequantize(*p);
  const at::Tensor mean = xq.mean({0, 2, 3}), invstd = (xq.var({0, 2, 3}, false) + 1e-5).rsqrt();
  auto run = [&](at::ScalarType t, const actnn::PackedActivation* rounded) {
    return actnn::batch_norm_backward(dy.to(t), xq.to(t), w.to(t), c10::nullopt, c10::nullopt, mean.to(t),
                                      invstd.to(t), true, 1e-5, {true, true, true}, false, rounded);
  };
  const auto [ours, ours_w, ours_b] = run(at::kFloat, p.get());
  const auto [composite, composite_w, composite_b] = run(at::kDouble, p.get());
  const auto [plain, plain_w, plain_b] = run(at::kFloat, nullptr);
  EXPECT_TRUE(at::allclose(ours.to(at::kDouble), composite, 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(ours_w, plain_w));  // weight and bias gradients are linear: untouched
  EXPECT_TRUE(at::allclose(ours_b, plain_b));
  EXPECT_GT((ours - plain).abs().max().item<float>(), 1e-4) << "the correction did nothing";
}

}  // namespace
