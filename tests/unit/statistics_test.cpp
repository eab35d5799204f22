// Statistical properties of stochastic rounding over many seeds: the
// dequantized value is unbiased, E[x'] = x, and its variance is
// Delta^2 p (1 - p), where Delta = 1 / scale is the group's step and p the
// fractional part of (x - lo) * scale. Bounds are z-scores against the
// sampling error of K seeds, not loose tolerances.
//
// x' - x = Delta (B - p) with B ~ Bernoulli(p). The variance is checked as
// the mean of (x' - x)^2 around the true x (unbiasedness is checked on its
// own): its sampling variance Delta^4 p q (q - p)^2 / K is exact, and it
// vanishes at p = 1/2, where (x' - x)^2 = Delta^2 / 4 for every seed. (The
// sample variance around the sample mean would need a normal approximation
// that fails near p = 1/2.)
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "actnn/runtime/ops.h"

namespace actnn {
namespace {

constexpr int kSeeds = 2000;
// |z| above 5.5 has probability 4e-8 per element under the null hypothesis.
constexpr double kMaxZ = 5.5;

struct Moments {
  at::Tensor x, lo, step, frac;  // per element, double
  at::Tensor mean, mse;          // over seeds, per element: E[x'], E[(x' - x)^2]
};

Moments sample(const at::Tensor& x, std::vector<int64_t> bits, int64_t G) {
  const int64_t N = x.size(0), D = x.numel() / N;
  const at::Tensor xd = x.reshape({N, D}).to(at::kDouble);
  at::Tensor sum = at::zeros({N, D}, at::kDouble), sumsq = at::zeros({N, D}, at::kDouble);
  c10::intrusive_ptr<PackedActivation> p;
  for (int s = 0; s < kSeeds; ++s) {
    p = quantize(x, bits, G, /*seed=*/1000 + s, /*offset=*/0);
    const at::Tensor y = dequantize(*p).reshape({N, D}).to(at::kDouble);
    sum += y;
    sumsq += (y - xd) * (y - xd);
  }
  Moments m;
  m.x = xd;
  m.mean = sum / kSeeds;
  m.mse = sumsq / kSeeds;
  // Per element group metadata, expanded from [N, P]; float arithmetic as in
  // the kernel for the fractional part.
  auto expand = [&](const at::Tensor& meta) {
    return meta.to(at::kFloat).repeat_interleave(G, 1).narrow(1, 0, D);
  };
  const at::Tensor lo = expand(p->lo), scale = expand(p->scale);
  const at::Tensor v = (x.reshape({N, D}) - lo) * scale;  // float
  m.frac = (v - v.floor()).to(at::kDouble);
  m.lo = lo.to(at::kDouble);
  m.step = scale.reciprocal().to(at::kDouble);
  return m;
}

// Elements whose p(1 - p) is tiny have almost no variance; the normal
// approximation does not hold for them, so they are checked separately.
at::Tensor regular(const Moments& m) {
  return (m.frac * (1 - m.frac)) > 0.01;
}

void expect_unbiased(const Moments& m) {
  const at::Tensor pq = m.frac * (1 - m.frac);
  const at::Tensor se_mean = m.step * pq.sqrt() / std::sqrt(double(kSeeds));
  const at::Tensor reg = regular(m);
  const at::Tensor z = ((m.mean - m.x) / se_mean).masked_select(reg);
  const int64_t M = z.numel();
  ASSERT_GT(M, m.x.numel() / 2);
  EXPECT_LT(z.abs().max().item<double>(), kMaxZ) << "per-element bias";
  // Aggregate: the mean of z^2 is 1 with standard error sqrt(2 / M).
  const double chi = (z * z).mean().item<double>();
  EXPECT_NEAR(chi, 1.0, 6 * std::sqrt(2.0 / M)) << "mean z^2 over " << M << " elements";
  // Near-degenerate elements: within their (tiny) sampling error plus the
  // float rounding of the decode.
  const at::Tensor err = (m.mean - m.x).abs().masked_select(reg.logical_not());
  const at::Tensor bound = (kMaxZ * se_mean + 1e-6 * (m.x.abs() + m.lo.abs() + m.step))
                               .masked_select(reg.logical_not());
  EXPECT_TRUE((err <= bound).all().item<bool>());
}

void expect_variance(const Moments& m) {
  const at::Tensor p = m.frac, q = 1 - p;
  const at::Tensor d2 = m.step * m.step;
  const at::Tensor var = d2 * p * q;
  const at::Tensor se = (d2 * d2 * p * q * (q - p) * (q - p) / kSeeds).sqrt();
  // Float rounding of x' (a few ulps of the values involved) enters the
  // squared error through 2 |x' - x| ulp.
  const at::Tensor ulp = 1.2e-7 * (m.x.abs() + m.lo.abs() + m.step);
  const at::Tensor slack = 4 * m.step * ulp;
  const at::Tensor reg = regular(m);
  const at::Tensor err = (m.mse - var).abs();
  const at::Tensor excess = (err - kMaxZ * se - slack).masked_select(reg);
  EXPECT_LE(excess.max().item<double>(), 0.0) << "per-element variance";
  // Aggregate over the elements: the sum of the errors against its own
  // standard error (sum of independent per-element sampling variances).
  const double total = (m.mse - var).masked_select(reg).sum().item<double>();
  const double total_se = (se * se).masked_select(reg).sum().sqrt().item<double>();
  EXPECT_LE(std::fabs(total), kMaxZ * total_se + slack.masked_select(reg).sum().item<double>());
  // Overall, the summed squared error matches the summed theoretical variance.
  EXPECT_NEAR((m.mse.sum() / var.sum()).item<double>(), 1.0, 0.01);
}

at::Tensor data(uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  // Two samples, two full groups and one partial group each; mixed scales.
  at::Tensor x = at::randn({2, 700}, gen);
  x.narrow(1, 256, 256).mul_(10).add_(5);
  return x;
}

class Statistics : public ::testing::TestWithParam<int> {};

TEST_P(Statistics, UnbiasedWithTheoreticalVariance) {
  const Moments m = sample(data(1), {GetParam()}, 256);
  expect_unbiased(m);
  expect_variance(m);
}

INSTANTIATE_TEST_SUITE_P(EveryWidth, Statistics, ::testing::Values(1, 2, 4, 8),
                         [](const auto& info) { return "bits" + std::to_string(info.param); });

TEST(StatisticsMixed, PerSampleWidths) {
  const Moments m = sample(data(2), {2, 8}, 128);
  expect_unbiased(m);
  expect_variance(m);
}

TEST(StatisticsMixed, BiasedRoundingIsDetected) {
  // The check has power: a deterministic shift of a tenth of a step, as a
  // rounding bug would cause, must fail it.
  Moments m = sample(data(3), {4}, 256);
  m.mean = m.mean + 0.1 * m.step;
  const at::Tensor se_mean = m.step * (m.frac * (1 - m.frac)).sqrt() / std::sqrt(double(kSeeds));
  const at::Tensor z = ((m.mean - m.x) / se_mean).masked_select(regular(m));
  EXPECT_GT(z.abs().max().item<double>(), kMaxZ);
}

}  // namespace
}  // namespace actnn
