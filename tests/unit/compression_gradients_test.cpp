// Gradient statistics of compiled modules at the compressed levels, on the
// STAT_NETS of tests/models/export_small_nets.py (random weights, train
// mode). Between steps only the quantization seed changes: at::manual_seed
// before each step sets what CompressionState::beginStep draws.
//  - masks and pooling indices are exact: a net whose input gradient needs
//    nothing else gets the L0 input gradient bit for bit at L2 and L3;
//  - quantized activations are unbiased: the mean gradient over k seeds
//    converges to L0's like 1/sqrt(k), with no floor;
//  - the variance a b-bit quantized linear input adds to the weight gradient
//    is within the stochastic-rounding bound, equals the exact prediction
//    from the stored group minimum and scale, and scales like (2^b - 1)^-2;
//  - the per-level variance of a conv net is printed for the record.
// Pass/fail checks, not benchmarks: each runs in well under a second.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/serialization/import.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "actnn/actnn.h"
#include "actnn/runtime/compression.h"
#include "actnn/runtime/ops.h"

namespace {

std::string modelPath(const std::string& name) { return std::string(ACTNN_TEST_MODELS_DIR) + "/" + name + ".pt"; }

// A fresh copy of the net for each compiled module (a compiled module shares
// its original's parameters, so gradients would accumulate across levels).
torch::jit::Module compileNet(const std::string& name, const std::string& level, const std::string& passes = "") {
  actnn::Options options;
  options.level = level;
  options.passes = passes;
  return actnn::compile(torch::jit::load(modelPath(name)), options);
}

std::string fixedWidthPipeline(int64_t bits) {
  return "lower-module,canonicalize,autodiff,saved-set,insert-compression{bits=" + std::to_string(bits) + "}";
}

c10::intrusive_ptr<actnn::CompressionState> stateOf(const torch::jit::Module& m) {
  return m.attr("_actnn_state").toCustomClass<actnn::CompressionState>();
}

at::Tensor fixedRandn(at::IntArrayRef shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen);
}

struct Grads {
  at::Tensor input;
  std::map<std::string, at::Tensor> params;
};

// One training step, loss = sum(out * probe), from at::manual_seed(seed).
Grads trainStep(torch::jit::Module& m, const at::Tensor& x, const at::Tensor& probe, uint64_t seed) {
  at::Tensor input = x.detach().clone().requires_grad_(true);
  for (const auto& p : m.parameters()) p.mutable_grad() = at::Tensor();
  at::manual_seed(seed);
  at::Tensor out = m.forward({input}).toTensor();
  (out * probe).sum().backward();
  Grads g;
  g.input = input.grad();
  for (const auto& p : m.named_parameters()) g.params[p.name] = p.value.grad().detach().clone();
  return g;
}

at::Tensor probeFor(torch::jit::Module& m, const at::Tensor& x) {
  at::NoGradGuard no_grad;
  m.eval();  // the original forward: no compression, no state step
  const at::Tensor out = m.forward({x}).toTensor();
  m.train();
  return fixedRandn(out.sizes(), 99);
}

double squaredNorm(const at::Tensor& t) { return t.to(at::kDouble).square().sum().item<double>(); }

// max |a - b| / max |b|
double relativeError(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() / b.abs().max().item<double>();
}

// --- a. masks and pooling indices -----------------------------------------

// relu -> max_pool2d(3, 2, 1) -> max_pool2d(2) -> dropout(0.5) -> relu6 ->
// hardtanh -> leaky_relu: every backward reads a mask or pooling indices,
// which are stored exactly, so nothing is quantized and the input gradient
// is L0's bit for bit, dropout masks included (beginStep draws nothing from
// the generator dropout uses, so both see the same stream).
TEST(CompressionGradients, MasksAndPoolIndicesAreExact) {
  const at::Tensor x = fixedRandn({4, 3, 32, 32}, 1);
  torch::jit::Module reference = compileNet("stats_masks", "L0");
  const at::Tensor probe = probeFor(reference, x);
  for (const char* level : {"L2", "L3"}) {
    torch::jit::Module compiled = compileNet("stats_masks", level);
    EXPECT_TRUE(stateOf(compiled)->sites.empty()) << level << ": something was quantized";
    for (uint64_t seed : {1, 2, 3}) {
      const at::Tensor expected = trainStep(reference, x, probe, seed).input;
      const at::Tensor got = trainStep(compiled, x, probe, seed).input;
      ASSERT_TRUE(expected.defined() && got.defined());
      EXPECT_GT(expected.ne(0).sum().item<int64_t>(), 50) << "too few gradient paths to test";
      EXPECT_TRUE(at::equal(got, expected))
          << level << ", seed " << seed << ": " << got.ne(expected).sum().item<int64_t>() << " of " << got.numel()
          << " input gradients differ";
    }
  }
}

// --- b. unbiasedness ----------------------------------------------------

// The statistics of k steps' gradients, flattened over the given parameters.
struct Samples {
  at::Tensor sum, sumsq;  // double
  int64_t k = 0;
  void add(const at::Tensor& g) {
    const at::Tensor d = g.to(at::kDouble);
    if (!sum.defined()) {
      sum = at::zeros_like(d);
      sumsq = at::zeros_like(d);
    }
    sum += d;
    sumsq += d.square();
    ++k;
  }
  at::Tensor mean() const { return sum / double(k); }
  // Sum over elements of the sample variance (the trace of the covariance).
  double totalVariance() const {
    return ((sumsq - sum.square() / double(k)) / double(k - 1)).sum().item<double>();
  }
};

at::Tensor flatten(const Grads& g, const std::vector<std::string>& names) {
  std::vector<at::Tensor> parts;
  for (const auto& name : names) parts.push_back(g.params.at(name).reshape(-1));
  return at::cat(parts);
}

std::vector<std::string> parameterNames(const Grads& g) {
  std::vector<std::string> names;
  for (const auto& p : g.params) names.push_back(p.first);
  return names;
}

// conv -> relu -> conv -> relu -> global average -> linear, no batch norm: at
// L2 / L3 the second conv's input and the linear's input are quantized, so
// conv2.weight and fc.weight get noise; nothing else does (relu masks are
// exact and no quantized value feeds an input gradient). Over k seeds the
// mean gradient converges to L0's: the relative error of the mean falls like
// 1/sqrt(k) (so by ~4x from k = 4 to k = 64; asserted < 0.5x), and at k = 64
// it is what the sample variance explains, E|mean - g|^2 = tr(Cov) / k, with
// no floor a bias would leave (asserted within 2x of it).
TEST(CompressionGradients, QuantizedGradientsAreUnbiased) {
  const at::Tensor x = fixedRandn({8, 3, 12, 12}, 2);
  torch::jit::Module reference = compileNet("stats_convnet", "L0");
  const at::Tensor probe = probeFor(reference, x);
  const Grads exact = trainStep(reference, x, probe, 0);
  const Grads again = trainStep(reference, x, probe, 12345);
  const auto names = parameterNames(exact);
  ASSERT_EQ(names.size(), 6u);
  for (const auto& name : names)
    EXPECT_TRUE(at::equal(exact.params.at(name), again.params.at(name))) << name << ": L0 depends on the seed";
  const at::Tensor g0 = flatten(exact, names).to(at::kDouble);
  const double norm0 = std::sqrt(squaredNorm(g0));
  for (const char* level : {"L2", "L3"}) {
    torch::jit::Module compiled = compileNet("stats_convnet", level);
    EXPECT_EQ(stateOf(compiled)->sites.size(), 2u) << level;
    Samples first4, all64;
    std::map<std::string, Samples> per_param;
    for (uint64_t k = 0; k < 64; ++k) {
      const Grads g = trainStep(compiled, x, probe, 1000 + k);
      // Noise-free, up to float rounding: reductions need not sum in the same
      // order in two programs (seen: 5e-7 relative on conv1's gradients,
      // depending on what ran before in the process).
      EXPECT_LE(relativeError(g.input, exact.input), 1e-5) << level << ", seed " << 1000 + k << ": input gradient";
      for (const char* name : {"conv1.weight", "conv1.bias", "conv2.bias", "fc.bias"})
        EXPECT_LE(relativeError(g.params.at(name), exact.params.at(name)), 1e-5) << level << ": " << name << " got noise";
      const at::Tensor flat = flatten(g, names);
      all64.add(flat);
      if (k < 4) first4.add(flat);
      for (const char* name : {"conv2.weight", "fc.weight"}) per_param[name].add(g.params.at(name).reshape(-1));
    }
    const double e4 = std::sqrt(squaredNorm(first4.mean() - g0)) / norm0;
    const double e64 = std::sqrt(squaredNorm(all64.mean() - g0)) / norm0;
    const double explained = all64.totalVariance() / 64 / (norm0 * norm0);
    std::printf("[ %s: relative error of the mean gradient: k=4 %.4f, k=64 %.4f, ratio %.3f (1/4 expected); "
                "|mean - g|^2 / (tr(Cov)/k) at k=64: %.3f ]\n",
                level, e4, e64, e64 / e4, e64 * e64 / explained);
    for (auto& [name, samples] : per_param) {
      const at::Tensor g = exact.params.at(name).reshape(-1).to(at::kDouble);
      std::printf("[   %s: relative error of the mean at k=64 %.4f ]\n", name.c_str(),
                  std::sqrt(squaredNorm(samples.mean() - g) / squaredNorm(g)));
    }
    EXPECT_GT(e4, 1e-4) << level << ": no quantization noise at all?";
    EXPECT_LT(e64 / e4, 0.5) << level;
    EXPECT_LT(e64 * e64, 2 * explained) << level << ": the mean is further off than the variance explains (bias)";
    EXPECT_GT(e64 * e64, 0.5 * explained) << level;
  }
}

// --- c. variance against theory -------------------------------------------

// y = (2 x) W^T with the input 2 x quantized at b bits, groups of G = 256
// within each sample (640 values: two full groups and one of 128, padded).
// dW = sum_n g_n (2 x_n + e_n)^T with g_n = probe_n, so
//   sum_ij Var[dW_ij] = sum_n |g_n|^2 sum_j Var[e_nj]
//                    <= sum_n |g_n|^2 sum_groups G R_g^2 / (4 (2^b - 1)^2),
// Var[e] = Delta^2 p (1 - p) <= Delta^2 / 4 per value with Delta = R_g / (2^b - 1).
// For values spread evenly across the levels p (1 - p) averages 1/6, so ~2/3
// of the bound; the short last group, counted as 256 values, lowers that
// further. The variance times (2^b - 1)^2 is the same at every width.
// Exactly, with the group's stored minimum lo and scale (16-bit, so the step
// 1 / scale is a little over R / (2^b - 1)), each value adds
// p (1 - p) / scale^2, p = frac((x - lo) scale): the measured variance
// matches that prediction to within the sampling error of the seeds.
TEST(CompressionGradients, LinearWeightVarianceFollowsTheory) {
  const at::Tensor x = fixedRandn({8, 640}, 3);
  const at::Tensor a = x * 2.0;  // the quantized activation, as the net computes it
  torch::jit::Module reference = compileNet("stats_linear", "L0");
  const at::Tensor probe = probeFor(reference, x);
  const at::Tensor g0 = trainStep(reference, x, probe, 0).params.at("fc.weight").to(at::kDouble);
  // sum_n |g_n|^2 * G / 4 * sum_groups R_g^2
  double bound_numerator = 0;
  for (int64_t n = 0; n < 8; ++n) {
    double ranges = 0;
    for (int64_t start : {0, 256, 512}) {
      const at::Tensor group = a[n].narrow(0, start, std::min<int64_t>(256, 640 - start)).to(at::kDouble);
      ranges += std::pow((group.max() - group.min()).item<double>(), 2);
    }
    bound_numerator += squaredNorm(probe[n]) * 256.0 / 4 * ranges;
  }
  // The exact variance, from the stored lo and scale of each group.
  auto predicted = [&](int64_t bits) {
    const auto packed = actnn::quantize(a, {bits}, 256, 0, 0);
    const at::Tensor lo = packed->lo.to(at::kDouble).unsqueeze(2), scale = packed->scale.to(at::kDouble).unsqueeze(2);
    const at::Tensor padded = at::constant_pad_nd(a.to(at::kDouble), {0, 768 - 640}).reshape({8, 3, 256});
    const at::Tensor t = (padded - lo) * scale, p = t - t.floor();
    const at::Tensor per_value = (p * (1 - p) / scale.square()).reshape({8, 768}).narrow(1, 0, 640);
    return (per_value.sum(1) * probe.to(at::kDouble).square().sum(1)).sum().item<double>();
  };
  constexpr int kSeeds = 200;
  std::map<int64_t, double> normalized;
  for (int64_t bits : {2, 4, 8}) {
    torch::jit::Module compiled = compileNet("stats_linear", "", fixedWidthPipeline(bits));
    const auto state = stateOf(compiled);
    ASSERT_EQ(state->sites.size(), 1u);
    EXPECT_EQ(state->sites[0].bits, bits);
    double mse = 0;
    for (int s = 0; s < kSeeds; ++s)
      mse += squaredNorm(trainStep(compiled, x, probe, 5000 + s).params.at("fc.weight").to(at::kDouble) - g0);
    const double variance = mse / kSeeds;  // around the exact gradient: unbiased, so the variance
    const double levels = double((1 << bits) - 1);
    const double bound = bound_numerator / (levels * levels);
    normalized[bits] = variance * levels * levels;
    const double exact = predicted(bits);
    std::printf("[ %d bits: sum Var[dW] = %.4e, bound %.4e, ratio %.3f; predicted from lo / scale %.4e, ratio %.4f ]\n",
                int(bits), variance, bound, variance / bound, exact, variance / exact);
    EXPECT_LE(variance, bound) << bits << " bits";
    EXPECT_GE(variance, 0.4 * bound) << bits << " bits";
    EXPECT_NEAR(variance / exact, 1.0, 0.03) << bits << " bits";
  }
  std::printf("[ Var * (2^b - 1)^2 relative to 2 bits: 4 bits %.3f, 8 bits %.3f ]\n", normalized[4] / normalized[2],
              normalized[8] / normalized[2]);
  for (int64_t bits : {4, 8}) {
    EXPECT_NEAR(normalized[bits] / normalized[2], 1.0, 0.2) << bits << " bits vs 2";
  }
}

// --- d. per-level variance, reported --------------------------------------

// The conv net's weight-gradient variance at L1 (conv inputs at 4 bits), L2
// (every activation at 4 bits) and L3 (2 bits on average, mixed), relative to
// the squared gradient norm: tr(Cov) / |g|^2 per weight and in all. Printed
// for the record; only sanity is asserted.
// --- reuse-buffers changes where gradients are written, not their values ---

// The same compressed step with and without reuse-buffers, from the same
// seed (so the same stochastic rounding): every gradient agrees to float
// rounding (the batch-norm backward kernel sums in double, ATen in float).
// A convolution that read its placeholder's values, or a sum written into a
// tensor still in use, would be off by O(1).
TEST(CompressionGradients, ReuseBuffersKeepsGradients) {
  const at::Tensor x = fixedRandn({4, 3, 10, 10}, 5);
  for (const std::string& compression : {"insert-compression{bits=8}", "insert-compression{bits=2,mixed=true}"}) {
    const std::string base = "lower-module,canonicalize,autodiff,order-backward,saved-set," + compression;
    torch::jit::Module plain = compileNet("residual", "L3", base);
    torch::jit::Module reused = compileNet("residual", "L3", base + ",reuse-buffers");
    const at::Tensor probe = probeFor(plain, x);
    for (uint64_t step = 0; step < 3; ++step) {  // later steps: mixed precision's bit allocation
      const Grads a = trainStep(plain, x, probe, 40 + step), b = trainStep(reused, x, probe, 40 + step);
      EXPECT_LT(relativeError(b.input, a.input), 1e-5) << compression << " step " << step << ": input";
      for (const auto& [name, g] : a.params)
        EXPECT_LT(relativeError(b.params.at(name), g), 1e-5) << compression << " step " << step << ": " << name;
    }
  }
}

TEST(CompressionGradients, ReportsVariancePerLevel) {
  const at::Tensor x = fixedRandn({8, 3, 12, 12}, 4);
  torch::jit::Module reference = compileNet("stats_convnet", "L0");
  const at::Tensor probe = probeFor(reference, x);
  const Grads exact = trainStep(reference, x, probe, 0);
  const std::vector<std::string> weights = {"conv1.weight", "conv2.weight", "fc.weight"};
  const double norm0 = squaredNorm(flatten(exact, weights));
  double previous = 0;
  for (const char* level : {"L1", "L2", "L3"}) {
    torch::jit::Module compiled = compileNet("stats_convnet", level);
    Samples all;
    std::map<std::string, Samples> per_weight;
    for (uint64_t k = 0; k < 32; ++k) {
      const Grads g = trainStep(compiled, x, probe, 2000 + k);
      all.add(flatten(g, weights));
      for (const auto& w : weights) per_weight[w].add(g.params.at(w).reshape(-1));
    }
    const double total = all.totalVariance() / norm0;
    std::printf("[ %s: weight-gradient variance / |g|^2 = %.3e (", level, total);
    for (const auto& w : weights)
      std::printf("%s%s %.3e", w == weights[0] ? "" : ", ", w.c_str(),
                  per_weight[w].totalVariance() / squaredNorm(exact.params.at(w)));
    std::printf(") ]\n");
    EXPECT_TRUE(std::isfinite(total)) << level;
    EXPECT_GE(total, previous) << level << " has less variance than the level below";
    previous = total;
  }
}

// insert-compression marks the sites a batch norm reads; at run time those
// with few values per channel (ResNet-18 at 32x32, batch 4: layer2-4 at 4x4,
// 2x2 and 1x1, 64, 16 and 4 values) get at least 4 bits, the rest keep their
// floors.
TEST(CompressionGradients, SmallCountBatchNormSitesGetFourBits) {
  torch::jit::Module m = compileNet("resnet18", "L3");
  auto state = stateOf(m);
  int64_t flagged = 0, raised = 0;
  for (const auto& site : state->sites) {
    const bool read_by_bn = site.name.find("-> aten::native_batch_norm") != std::string::npos;
    EXPECT_EQ(site.batch_norm, read_by_bn) << site.name;
    // Read by batch norms only (every conv output here): weighed per channel
    // in x_hat units by the allocator.
    EXPECT_EQ(site.normalized, read_by_bn ? -1 : 0) << site.name;
    flagged += site.batch_norm;
  }
  EXPECT_GT(flagged, 10);
  const at::Tensor x = fixedRandn({4, 3, 32, 32}, 6);
  at::manual_seed(0);
  m.forward({x}).toTensor().sum().backward();
  for (const auto& site : state->sites) {
    if (site.bits != 0 || site.last_bits.empty()) continue;
    const int64_t narrowest = *std::min_element(site.last_bits.begin(), site.last_bits.end());
    EXPECT_GE(narrowest, site.active_floor) << site.name;
    if (site.active_floor == 4) {
      EXPECT_TRUE(site.batch_norm) << site.name;
      ++raised;
    }
  }
  EXPECT_GT(raised, 0);
  EXPECT_LT(raised, flagged);  // bn1 and layer1 (16x16, 8x8: 1024 and 256 values) keep floor 2
}

// An empty batch trains at every compressed level, as under autograd (zero
// gradients), and the next, real batch trains after it: mixed sites had no
// samples to give widths to (issue 19: "bits must hold one width ... got
// none").
TEST(CompressionGradients, EmptyBatchTrains) {
  for (const char* level : {"L2", "L3", "L4", "L5"}) {
    SCOPED_TRACE(level);
    torch::jit::Module m = compileNet("stats_transformer", level);
    const at::Tensor out = m.forward({at::zeros({0, 2, 16, 16})}).toTensor();
    EXPECT_EQ(out.size(0), 0);
    out.sum().backward();
    for (const auto& p : m.parameters()) {
      ASSERT_TRUE(p.grad().defined());
      EXPECT_EQ(p.grad().abs().max().item<float>(), 0.0f);
      p.mutable_grad() = at::Tensor();
    }
    m.forward({fixedRandn({4, 2, 16, 16}, 8)}).toTensor().sum().backward();
    for (const auto& p : m.parameters()) {
      ASSERT_TRUE(p.grad().defined());
      EXPECT_TRUE(at::isfinite(p.grad()).all().item<bool>());
    }
  }
}

// A value read only by a layer norm (stats_transformer's fc1 output) is a
// site the allocator weighs in x_hat units over the norm's one trailing dim;
// the others (linear, GELU, softmax, tanh and sigmoid readers) in absolute
// units.
TEST(CompressionGradients, LayerNormInputSiteIsNormalized) {
  torch::jit::Module m = compileNet("stats_transformer", "L3");
  auto state = stateOf(m);
  int64_t normalized = 0;
  for (const auto& site : state->sites) {
    const std::string suffix = "-> aten::native_layer_norm";
    const bool layer_norm_only = site.name.size() > suffix.size() &&
                                 site.name.compare(site.name.size() - suffix.size(), suffix.size(), suffix) == 0;
    EXPECT_EQ(site.normalized, layer_norm_only ? 1 : 0) << site.name;
    normalized += layer_norm_only;
  }
  EXPECT_EQ(normalized, 1);
}

// insert-compression's floors and flags for a transformer's sites: a softmax
// output may be packed as its lower triangle and keeps 4 bits; attention's Q,
// K^T and V (operands of a product of two activations) keep 4; a GELU input
// (read only for GELU's derivative) may go down to 1.
TEST(CompressionGradients, TransformerSiteFloors) {
  auto endsWith = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  auto attention = stateOf(compileNet("stats_attention", "L3"));
  int64_t softmax = 0, products = 0;
  for (const auto& site : attention->sites) {
    const bool is_softmax = site.name.rfind("aten::softmax", 0) == 0;
    EXPECT_EQ(site.triangular, is_softmax) << site.name;
    softmax += is_softmax;
    if (is_softmax || endsWith(site.name, "-> aten::matmul")) {
      EXPECT_EQ(site.floor, 4) << site.name;
      products += !is_softmax;
    }
  }
  EXPECT_EQ(softmax, 1);
  EXPECT_EQ(products, 3);  // Q, K^T, V
  auto transformer = stateOf(compileNet("stats_transformer", "L3"));
  int64_t gelu = 0;
  for (const auto& site : transformer->sites)
    if (endsWith(site.name, "-> aten::gelu")) {
      EXPECT_EQ(site.floor, 1) << site.name;
      ++gelu;
    }
  EXPECT_EQ(gelu, 1);
}

}  // namespace
