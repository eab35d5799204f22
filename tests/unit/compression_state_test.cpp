// CompressionState (runtime/compression.h), driven directly the way F and B
// drive it: beginStep before a forward, compress per saved site, observeGrad
// per gradient into a site's consumers. Widths, budgets, floors, the re-solve
// between steps, pickling, seeds and input checks.
#include <gtest/gtest.h>
#include <torch/custom_class.h>
#include <torch/csrc/jit/mobile/type_parser.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/unpickler.h>
#include <torch/script.h>

#include <ATen/ATen.h>

#include <cstring>
#include <limits>
#include <numeric>
#include <sstream>

#include "actnn/runtime/compression.h"
#include "actnn/runtime/ops.h"
#include "test_util.h"

namespace actnn {
namespace {

using Sites = std::vector<std::tuple<std::string, int64_t, int64_t>>;

c10::intrusive_ptr<CompressionState> makeState(double budget, const Sites& sites, int64_t group_size = 256) {
  std::vector<CompressionState::SiteConfig> config;
  for (const auto& [name, bits, floor] : sites) config.emplace_back(name, bits, floor, false, false, 0);
  return c10::make_intrusive<CompressionState>(budget, group_size, std::move(config));
}

// [n, d] uniform values, sample i scaled by scale[i] (its group ranges too).
at::Tensor scaledSamples(const std::vector<double>& scale, int64_t d, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor x = at::rand({int64_t(scale.size()), d}, gen);
  return x * at::tensor(scale, at::kDouble).to(at::kFloat).unsqueeze(1);
}

double mean(const std::vector<int64_t>& v) {
  return double(std::accumulate(v.begin(), v.end(), int64_t(0))) / double(v.size());
}

TEST(CompressionState, FixedWidthSiteCompressesWithThatWidth) {
  auto state = makeState(2, {{"w1", 1, 1}, {"w2", 2, 1}, {"w4", 4, 1}, {"w8", 8, 1}});
  state->beginStep();
  at::Generator gen = at::detail::createCPUGenerator(1);
  const at::Tensor x = at::randn({4, 3, 10, 10}, gen);
  const int64_t widths[] = {1, 2, 4, 8};
  for (int64_t k = 0; k < 4; ++k) {
    const auto p = state->compress(x, k, 1, c10::nullopt);
    EXPECT_EQ(p->bits, std::vector<int64_t>{widths[k]}) << "site " << k;
    EXPECT_EQ(state->sites[k].last_bits, std::vector<int64_t>{widths[k]});
    // Codes take b bits per value.
    EXPECT_EQ(p->codes.numel(), 4 * ((300 + 255) / 256) * 256 * widths[k] / 8) << "site " << k;
    const at::Tensor y = dequantize(*p);
    EXPECT_EQ(y.sizes(), x.sizes());
    // Within one quantization step of the group (range / (2^b - 1)), with
    // slack for the bfloat16 metadata.
    const double range = (x.max() - x.min()).item<double>();
    EXPECT_LE((y - x).abs().max().item<double>(), 1.05 * range / double((1 << widths[k]) - 1)) << "site " << k;
  }
}

// A mixed site splits its budget across the samples of each compress call:
// the widths average at most the budget, and a sample with wider group ranges
// never gets fewer bits than one with narrower ranges.
TEST(CompressionState, MixedSiteSplitsItsBudgetByRange) {
  const std::vector<double> scale = {1, 8, 0.5, 30, 2, 1e-3, 4, 100, 0.1, 1, 16, 0.3};
  for (double budget : {1.0, 1.5, 2.0, 3.0, 4.0, 6.0}) {
    auto state = makeState(budget, {{"mixed", 0, 1}});
    state->beginStep();
    const at::Tensor x = scaledSamples(scale, 700, 2);
    const auto p = state->compress(x, 0, -1, c10::nullopt);
    ASSERT_EQ(p->bits.size(), scale.size());
    EXPECT_LE(mean(p->bits), budget) << "budget " << budget;
    EXPECT_EQ(p->bits, state->sites[0].last_bits);
    for (size_t i = 0; i < scale.size(); ++i)
      for (size_t j = 0; j < scale.size(); ++j)
        if (scale[i] > scale[j]) {
          EXPECT_GE(p->bits[i], p->bits[j]) << "budget " << budget << ", samples " << i << ", " << j;
        }
    EXPECT_EQ(dequantize(*p).sizes(), x.sizes());
  }
  // The budget is used where it helps: at 2 bits, unequal samples do not all
  // get 2.
  auto state = makeState(2, {{"mixed", 0, 1}});
  state->beginStep();
  const auto p = state->compress(scaledSamples(scale, 700, 2), 0, -1, c10::nullopt);
  EXPECT_NE(p->bits, std::vector<int64_t>(scale.size(), 2));
}

// On the CPU a mixed site hands the quantize kernel the group ranges its
// statistics pass found, so that the kernel does not find them again. The
// bytes are those of quantize with the chosen widths: whole and padded
// groups, half and bfloat16 input, constant, signed-zero and non-finite groups.
TEST(CompressionState, MixedSiteBytesEqualQuantizeWithItsWidths) {
  const std::vector<double> scale = {1, 8, 0.5, 30, 2, 1e-3, 4, 100};
  for (int64_t d : {512, 700, 40}) {
    for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      at::Tensor x = scaledSamples(scale, d, 3);
      x[1].narrow(0, 0, std::min<int64_t>(d, 256)).fill_(0.75);  // a constant group
      x[2].narrow(0, 0, std::min<int64_t>(d, 256)).zero_();
      x[2][3] = -0.0;                        // signed zeros only
      x[3][5] = std::numeric_limits<float>::infinity();
      x[4][d - 1] = std::numeric_limits<float>::quiet_NaN();
      x = x.to(dtype);
      auto state = makeState(2, {{"mixed", 0, 1}});
      state->beginStep();
      const auto p = state->compress(x, 0, -1, c10::nullopt);
      const auto q = quantize(x, p->bits, 256, int64_t(state->seed), 0);
      EXPECT_TRUE(at::equal(p->codes, q->codes)) << "d " << d << " " << dtype;
      // Bits, not values: a non-finite group's lo is NaN.
      EXPECT_TRUE(at::equal(p->lo.view(at::kShort), q->lo.view(at::kShort))) << "d " << d << " " << dtype;
      EXPECT_TRUE(at::equal(p->scale.view(at::kShort), q->scale.view(at::kShort))) << "d " << d << " " << dtype;
    }
  }
}

// The per-sample cost a mixed site records is the variance bound of its
// consumer's weight gradient per |g_n|^2: G/4 * sum over groups of R_g^2
// (the last group, padded, counts like the others), times kappa = kernel taps
// / spatial positions.
TEST(CompressionState, RangeCostIsTheVarianceBoundPerGradientNorm) {
  auto state = makeState(2, {{"linear_in", 0, 1}, {"conv_in", 0, 1}});
  state->beginStep();
  const at::Tensor x = scaledSamples({1, 3, 0.25}, 600, 3);  // groups of 256, 256, 88
  state->compress(x, 0, -1, c10::nullopt);
  for (int64_t n = 0; n < 3; ++n) {
    double expected = 0;
    for (auto [start, len] : {std::pair<int64_t, int64_t>{0, 256}, {256, 256}, {512, 88}}) {
      const at::Tensor g = x[n].narrow(0, start, len).to(at::kDouble);
      expected += std::pow((g.max() - g.min()).item<double>(), 2);
    }
    EXPECT_NEAR(state->sites[0].range_cost[n], 256.0 / 4 * expected, 1e-6 * expected) << "sample " << n;
  }
  // A conv input [N, C, H, W] read by a 3x3 kernel: 9 taps over 6 * 5 positions.
  const at::Tensor image = x.reshape({3, 20, 6, 5});
  const at::Tensor weight = at::zeros({7, 20, 3, 3});
  state->compress(image, 1, 1, weight);
  for (int64_t n = 0; n < 3; ++n)
    EXPECT_NEAR(state->sites[1].range_cost[n], state->sites[0].range_cost[n] * 9.0 / 30.0,
                1e-6 * state->sites[0].range_cost[n]);
  EXPECT_EQ(state->sites[1].sample_numel, 600);
}

// One step of a three-site program: a site whose gradient is larger, and one
// whose ranges are larger, get more bits for the next step than a plain one;
// the weighted average stays within the global budget.
TEST(CompressionState, ObservedGradientsResolveBudgetsAcrossSites) {
  auto state = makeState(2, {{"plain", 0, 1}, {"big_grad", 0, 1}, {"big_range", 0, 1}, {"fixed", 4, 1}});
  const std::vector<double> ones(8, 1.0), tens(8, 10.0);
  const at::Tensor x = scaledSamples(ones, 512, 4), wide = scaledSamples(tens, 512, 5);
  at::Generator gen = at::detail::createCPUGenerator(6);
  const at::Tensor g = at::randn({8, 32}, gen);
  auto step = [&] {
    state->beginStep();
    state->compress(x, 0, -1, c10::nullopt);
    state->compress(x, 1, -1, c10::nullopt);
    state->compress(wide, 2, -1, c10::nullopt);
    state->compress(x, 3, -1, c10::nullopt);
    state->observeGrad(g, 0);
    state->observeGrad(g * 10, 1);
    state->observeGrad(g, 2);
    state->observeGrad(g, 3);  // a fixed site ignores gradients
  };
  step();
  for (const auto& s : state->sites) EXPECT_EQ(s.budget, 2.0) << s.name << ": before any solve";
  step();  // its beginStep re-solved from the first step's statistics
  const double plain = state->sites[0].budget, big_grad = state->sites[1].budget, big_range = state->sites[2].budget;
  std::printf("[ budgets after one step: plain %.3f, big_grad %.3f, big_range %.3f ]\n", plain, big_grad, big_range);
  EXPECT_GT(big_grad, plain);
  EXPECT_GT(big_range, plain);
  EXPECT_LE((plain + big_grad + big_range) / 3, 2.0 + 1e-12);  // equal sizes: the plain average
  EXPECT_FALSE(state->sites[3].grad_sq.defined());
  // The new budgets reach the next compress calls.
  EXPECT_LE(mean(state->sites[1].last_bits), big_grad);
  EXPECT_GT(mean(state->sites[1].last_bits), 2.0);
  EXPECT_LT(mean(state->sites[0].last_bits), 2.0);
  // No backward since the last solve: the budgets stay.
  state->beginStep();
  EXPECT_EQ(state->sites[0].budget, plain);
  EXPECT_EQ(state->sites[1].budget, big_grad);
}

// Sites of different sizes: the average is weighted by values, not by sites.
TEST(CompressionState, ResolvedBudgetsAverageAtMostTheBudgetByValues) {
  for (double budget : {1.5, 2.0, 2.5, 4.0}) {
    auto state = makeState(budget, {{"small", 0, 1}, {"large", 0, 1}, {"odd", 0, 2}});
    at::Generator gen = at::detail::createCPUGenerator(7);
    const at::Tensor a = at::randn({4, 300}, gen), b = at::randn({4, 3000}, gen) * 0.1, c = at::randn({4, 77}, gen);
    state->beginStep();
    state->compress(a, 0, -1, c10::nullopt);
    state->compress(b, 1, -1, c10::nullopt);
    state->compress(c, 2, -1, c10::nullopt);
    state->observeGrad(at::randn({4, 10}, gen), 0);
    state->observeGrad(at::randn({4, 10}, gen) * 3, 1);
    state->observeGrad(at::randn({4, 10}, gen), 2);
    state->beginStep();
    const double weighted =
        (state->sites[0].budget * 300 + state->sites[1].budget * 3000 + state->sites[2].budget * 77) / 3377;
    EXPECT_LE(weighted, budget + 1e-12) << "budget " << budget;
    EXPECT_GE(state->sites[2].budget, 2.0) << "floor 2";
  }
}

TEST(CompressionState, FloorsAreRespected) {
  // Per sample: a constant sample costs nothing but still gets its floor.
  auto state = makeState(2, {{"floored", 0, 2}, {"free", 0, 1}, {"high", 0, 4}});
  const std::vector<double> scale = {0, 1, 100, 0.01, 1e4, 0, 3, 0.5};
  state->beginStep();
  for (int64_t k = 0; k < 3; ++k) {
    const auto p = state->compress(scaledSamples(scale, 300, 8), k, -1, c10::nullopt);
    for (int64_t b : p->bits) EXPECT_GE(b, state->sites[k].floor) << state->sites[k].name;
  }
  EXPECT_EQ(state->sites[0].last_bits, std::vector<int64_t>(8, 2));  // floor 2 at budget 2: no room
  EXPECT_LT(*std::min_element(state->sites[1].last_bits.begin(), state->sites[1].last_bits.end()), 2);
  EXPECT_EQ(state->sites[2].last_bits, std::vector<int64_t>(8, 4));  // floors over the budget
  // Across sites: a floored site with tiny costs still gets its floor.
  for (int64_t k = 0; k < 3; ++k) state->observeGrad(at::full({8, 4}, k == 1 ? 100.0 : 1e-6), k);
  state->beginStep();
  EXPECT_GE(state->sites[0].budget, 2.0);
  EXPECT_GE(state->sites[2].budget, 4.0);
}

// A batch norm's input with fewer than kSmallCount values per channel gets at
// least 4 bits (its noise reaches the input gradient through per-channel
// means over few values); with more values, or read by something else, its
// own floor holds. The raised floor also holds across sites.
TEST(CompressionState, SmallCountBatchNormInputHasFloorFour) {
  std::vector<CompressionState::SiteConfig> config = {{"bn.small", 0, 2, false, true, 0},
                                                      {"bn.large", 0, 2, false, true, 0},
                                                      {"silu.small", 0, 2, false, false, 0},
                                                      {"conv.large", 0, 1, false, false, 0}};
  auto state = c10::make_intrusive<CompressionState>(2, 256, std::move(config));
  at::Generator gen = at::detail::createCPUGenerator(4);
  const std::vector<at::Tensor> x = {at::randn({8, 64, 2, 2}, gen),  // 32 values per channel
                                     at::randn({8, 4, 16, 16}, gen),  // 2048
                                     at::randn({8, 64, 2, 2}, gen), at::randn({8, 16, 16, 16}, gen)};
  ASSERT_LT(x[0].numel() / x[0].size(1), CompressionState::kSmallCount);
  ASSERT_GE(x[1].numel() / x[1].size(1), CompressionState::kSmallCount);
  state->beginStep();
  const int64_t floors[] = {4, 2, 2, 1};
  for (int64_t k = 0; k < 4; ++k) {
    const auto p = state->compress(x[k], k, 1, c10::nullopt);
    EXPECT_EQ(state->sites[k].active_floor, floors[k]) << state->sites[k].name;
    EXPECT_EQ(mean(p->bits), k == 0 ? 4.0 : 2.0) << state->sites[k].name;
  }
  // Across sites, with the small site the cheapest: it keeps 4 bits and the
  // others pay for them within the budget.
  for (int64_t k = 0; k < 4; ++k) state->observeGrad(at::full({8, 4}, k == 0 ? 1e-6 : 100.0), k);
  state->beginStep();
  EXPECT_GE(state->sites[0].budget, 4.0);
  double bits = 0, values = 0;
  for (int64_t k = 0; k < 4; ++k) {
    bits += state->sites[k].budget * double(x[k].numel());
    values += double(x[k].numel());
  }
  EXPECT_LE(bits, 2.0 * values + 1e-6);
  // The same site called with a larger batch: the count passes the threshold.
  state->compress(at::randn({64, 64, 2, 2}, gen), 0, 1, c10::nullopt);
  EXPECT_EQ(state->sites[0].active_floor, 2);
}

// A site read only by layer norms is weighed in units of the normalized
// value: a residual stream 100x larger than another costs the same, since
// the layer norm's backward reads x_hat, whose rounding error is the same
// share of the same range. In absolute units it would take the other's bits.
TEST(CompressionState, LayerNormInputCostsAreInNormalizedUnits) {
  std::vector<CompressionState::SiteConfig> config = {{"ln.small", 0, 2, false, false, 1},
                                                      {"ln.large", 0, 2, false, false, 1},
                                                      {"linear.large", 0, 1, false, false, 0}};
  auto state = c10::make_intrusive<CompressionState>(2, 256, std::move(config));
  at::Generator gen = at::detail::createCPUGenerator(5);
  const at::Tensor x = at::randn({4, 16, 64}, gen);
  state->beginStep();
  state->compress(x, 0, -1, c10::nullopt);
  state->compress(x * 100, 1, -1, c10::nullopt);
  state->compress(x * 100, 2, -1, c10::nullopt);
  const std::vector<double> small = state->sites[0].range_cost;
  ASSERT_EQ(small.size(), 4u);
  // The absolute cost over the normalized one is the mean over the sample's
  // rows of 1 / (variance + eps): about 1e-4 for the scaled copy.
  const at::Tensor var = (x * 100).var(-1, /*unbiased=*/false);
  for (size_t n = 0; n < 4; ++n) {
    EXPECT_NEAR(state->sites[1].range_cost[n] / small[n], 1.0, 1e-3) << n;
    const double inv = (var[int64_t(n)] + CompressionState::kNormalizerEps).reciprocal().mean().item<double>();
    EXPECT_NEAR(state->sites[1].range_cost[n] / state->sites[2].range_cost[n], inv, 1e-5 * inv) << n;
  }
  // Within a site, a sample's scale and offset do not change its cost.
  at::Tensor shifted = x.clone();
  shifted[0].mul_(0.1).add_(5);
  state->compress(shifted, 0, -1, c10::nullopt);
  EXPECT_NEAR(state->sites[0].range_cost[0] / small[0], 1.0, 1e-2);
  EXPECT_NEAR(state->sites[0].range_cost[1] / small[1], 1.0, 1e-9);
}

TEST(CompressionState, ConstructorChecksWidthsFloorsAndBudget) {
  test::expect_error([] { makeState(0.5, {}); }, "bit budget must be in [1, 8], got 0.5");
  test::expect_error([] { makeState(9, {}); }, "got 9");
  test::expect_error([] { makeState(2, {{"conv1.input", 3, 1}}); }, "site 'conv1.input' has width 3");
  test::expect_error([] { makeState(2, {{"conv1.input", 0, 3}}); }, "site 'conv1.input' has floor 3");
}

void expectSameConfiguration(CompressionState& a, CompressionState& b) {
  EXPECT_EQ(a.budget_bits, b.budget_bits);
  EXPECT_EQ(a.group_size, b.group_size);
  EXPECT_EQ(a.steps, b.steps);
  ASSERT_EQ(a.sites.size(), b.sites.size());
  for (size_t k = 0; k < a.sites.size(); ++k) {
    EXPECT_EQ(a.sites[k].name, b.sites[k].name);
    EXPECT_EQ(a.sites[k].bits, b.sites[k].bits) << a.sites[k].name;
    EXPECT_EQ(a.sites[k].floor, b.sites[k].floor) << a.sites[k].name;
    EXPECT_EQ(a.sites[k].budget, b.sites[k].budget) << a.sites[k].name;
    EXPECT_EQ(a.sites[k].dither, b.sites[k].dither) << a.sites[k].name;
    EXPECT_EQ(a.sites[k].batch_norm, b.sites[k].batch_norm) << a.sites[k].name;
    EXPECT_EQ(a.sites[k].normalized, b.sites[k].normalized) << a.sites[k].name;
    EXPECT_EQ(a.sites[k].triangular, b.sites[k].triangular) << a.sites[k].name;
  }
}

// The state as an attribute of a module saved and loaded again (its
// def_pickle, the way a compiled module carries it).
c10::intrusive_ptr<CompressionState> throughModuleArchive(const c10::intrusive_ptr<CompressionState>& state) {
  torch::jit::Module holder("Holder");
  holder.register_attribute("state", torch::getCustomClass("__torch__.torch.classes.actnn.CompressionState"),
                            c10::IValue(state));
  std::stringstream archive;
  holder.save(archive);
  return torch::jit::load(archive).attr("state").toCustomClass<CompressionState>();
}

void expectSameStatistics(CompressionState& a, CompressionState& b) {
  EXPECT_EQ(a.dirty, b.dirty);
  ASSERT_EQ(a.sites.size(), b.sites.size());
  for (size_t k = 0; k < a.sites.size(); ++k) {
    const auto &x = a.sites[k], &y = b.sites[k];
    EXPECT_EQ(x.sample_numel, y.sample_numel) << x.name;
    EXPECT_EQ(x.active_floor, y.active_floor) << x.name;
    EXPECT_EQ(x.observed, y.observed) << x.name;
    EXPECT_EQ(x.range_cost, y.range_cost) << x.name;
    EXPECT_EQ(x.last_bits, y.last_bits) << x.name;
    ASSERT_EQ(x.grad_sq.defined(), y.grad_sq.defined()) << x.name;
    if (x.grad_sq.defined()) EXPECT_TRUE(at::equal(x.grad_sq.to(at::kDouble), y.grad_sq)) << x.name;
  }
}

// A state after a solve, so budgets differ from the global one.
c10::intrusive_ptr<CompressionState> solvedState() {
  auto state = makeState(2.5, {{"conv1.input", 0, 1}, {"bn1.input", 0, 2}, {"fc.input", 8, 1}, {"layer4", 0, 4}}, 128);
  at::Generator gen = at::detail::createCPUGenerator(9);
  state->beginStep();
  for (int64_t k = 0; k < 4; ++k) state->compress(at::randn({4, 200}, gen) * double(k + 1), k, -1, c10::nullopt);
  for (int64_t k = 0; k < 4; ++k) state->observeGrad(at::randn({4, 8}, gen) * double(4 - k), k);
  state->beginStep();
  EXPECT_NE(state->sites[0].budget, 2.5);
  state->sites[1].dither = true;
  state->sites[1].batch_norm = true;
  state->sites[1].normalized = -1;
  state->sites[3].normalized = 2;
  return state;
}

TEST(CompressionState, PickleRoundTripKeepsTheConfiguration) {
  auto state = solvedState();
  // Through the class's def_pickle, as an attribute of a saved module.
  auto loaded = throughModuleArchive(state);
  expectSameConfiguration(*state, *loaded);
  expectSameStatistics(*state, *loaded);
  // Through the pickler alone, the way torch::jit::load reads the class:
  // resolve the class by name, create the object, call its __setstate__.
  // (torch::jit::pickle_load resolves no custom classes in LibTorch 1.13:
  // "Unpickler found unknown type".)
  auto resolver = [](const c10::QualifiedName& name) {
    c10::TypePtr type = torch::getCustomClass(name.qualifiedName());
    return c10::StrongTypePtr(std::make_shared<torch::jit::CompilationUnit>(),
                              type ? type : c10::parseType(name.qualifiedName()));  // List[str] and the like
  };
  auto loader = [](const c10::StrongTypePtr& type, c10::IValue pickled) {
    auto object = c10::ivalue::Object::create(type, 1);
    torch::jit::Stack stack{c10::IValue(object), std::move(pickled)};
    type.type_->expectRef<c10::ClassType>().getMethod("__setstate__").run(stack);
    return object;
  };
  std::vector<at::Tensor> no_tensors;
  const std::vector<char> bytes = torch::jit::pickle(c10::IValue(state), &no_tensors);
  size_t pos = 0;
  torch::jit::Unpickler unpickler(
      [&](char* out, size_t n) {
        n = std::min(n, bytes.size() - pos);
        std::memcpy(out, bytes.data() + pos, n);
        pos += n;
        return n;
      },
      resolver, loader, [](const std::string&) -> at::DataPtr { throw std::runtime_error("no tensors"); },
      c10::nullopt);
  auto unpickled = unpickler.parse_ivalue().toCustomClass<CompressionState>();
  expectSameConfiguration(*state, *unpickled);
}

// A run saved between a backward and the next forward resumes with the
// statistics that backward gathered: the loaded state solves the same budgets
// and quantizes the next step bit for bit like the one that went on.
TEST(CompressionState, SavedStatisticsResumeTheSameNextStep) {
  auto state = makeState(2, {{"conv1.input", 0, 1}, {"bn1.input", 0, 1}, {"fc.input", 4, 1}}, 128);
  at::Generator gen = at::detail::createCPUGenerator(5);
  std::vector<at::Tensor> x;
  for (int64_t k = 0; k < 3; ++k) x.push_back(at::randn({4, 300}, gen) * std::pow(10.0, double(k)));
  at::manual_seed(11);
  state->beginStep();
  for (int64_t k = 0; k < 3; ++k) state->compress(x[k], k, -1, c10::nullopt);
  for (int64_t k = 0; k < 3; ++k) state->observeGrad(at::randn({4, 8}, gen), k);
  ASSERT_TRUE(state->dirty);

  auto loaded = throughModuleArchive(state);
  expectSameStatistics(*state, *loaded);

  at::manual_seed(11);
  state->beginStep();
  at::manual_seed(11);
  loaded->beginStep();
  expectSameConfiguration(*state, *loaded);
  EXPECT_NE(state->sites[0].budget, 2.0);  // the saved statistics were solved, not dropped
  for (int64_t k = 0; k < 3; ++k) {
    auto a = state->compress(x[k], k, -1, c10::nullopt);
    auto b = loaded->compress(x[k], k, -1, c10::nullopt);
    EXPECT_EQ(a->bits, b->bits) << k;
    EXPECT_TRUE(at::equal(a->codes, b->codes)) << k;
  }
}

// A step whose backward throws after observing some consumers: nothing it
// gathered reaches the next solve, and its number is given back, so the
// retried step quantizes bit for bit like a step that never failed.
TEST(CompressionState, AbandonedStepLeavesNoTrace) {
  auto make = [] { return makeState(2, {{"conv1.input", 0, 1}, {"fc.input", 0, 1}}, 128); };
  at::Generator gen = at::detail::createCPUGenerator(8);
  const at::Tensor x0 = at::randn({4, 300}, gen), x1 = at::randn({4, 300}, gen) * 3;
  const at::Tensor g0 = at::randn({4, 8}, gen), g1 = at::randn({4, 8}, gen) * 5;
  auto step = [&](CompressionState& s, bool fail) {
    at::manual_seed(3);
    const int64_t n = s.beginStep();
    std::vector<c10::intrusive_ptr<PackedActivation>> packed{s.compress(x0, 0, -1, c10::nullopt),
                                                             s.compress(x1, 1, -1, c10::nullopt)};
    s.observeGrad(g0, 0);
    if (fail) {
      s.abandonStep(n);  // the backward threw before site 1's consumer
      return packed;
    }
    s.observeGrad(g1, 1);
    return packed;
  };
  auto clean = make(), failed = make();
  step(*clean, false);
  step(*failed, false);
  step(*failed, true);
  EXPECT_FALSE(failed->dirty);
  EXPECT_EQ(failed->steps, 1);
  for (const auto& site : failed->sites) EXPECT_FALSE(site.observed) << site.name;
  // The retry of step 2 and step 3 match the run that never failed.
  for (int i = 0; i < 2; ++i) {
    auto a = step(*clean, false), b = step(*failed, false);
    for (size_t k = 0; k < a.size(); ++k) {
      EXPECT_EQ(a[k]->bits, b[k]->bits) << i << " " << k;
      EXPECT_TRUE(at::equal(a[k]->codes, b[k]->codes)) << i << " " << k;
    }
  }
  // A later step has begun: the failed one keeps its number.
  const int64_t first = failed->beginStep();
  failed->beginStep();
  failed->abandonStep(first);
  EXPECT_EQ(failed->steps, first + 1);
}

// An archive from before the statistics were saved holds the configuration
// tuple alone: it loads and gathers statistics again.
// A causal attention's probabilities at a softmax site: only the lower
// triangle is packed (about half the bytes), decoding gives the zeros above it
// back exactly, and the flag and the packed form survive pickling.
TEST(CompressionState, CausalSoftmaxSitePacksItsLowerTriangle) {
  std::vector<CompressionState::SiteConfig> config = {{"softmax", 4, 4, false, false, 0},
                                                      {"other", 4, 4, false, false, 0}};
  auto state = c10::make_intrusive<CompressionState>(2, 256, std::move(config));
  state->sites[0].triangular = true;
  state->beginStep();
  at::Generator gen = at::detail::createCPUGenerator(3);
  const int64_t t = 64;  // 25 of 48 groups a sample (fewer rows: padding to whole groups shows)
  const at::Tensor above = at::ones({t, t}, at::kBool).triu(1);
  const at::Tensor causal =
      at::softmax(at::randn({2, 3, t, t}, gen).masked_fill(above, -std::numeric_limits<float>::infinity()), -1);
  const auto packed = state->compress(causal, 0, -1, c10::nullopt);
  EXPECT_EQ(packed->lower_triangle_of, causal.sizes().vec());
  EXPECT_EQ(packed->shape, (std::vector<int64_t>{2, 3 * t * (t + 1) / 2}));
  EXPECT_EQ(packed->original_shape(), causal.sizes().vec());
  const auto whole = state->compress(causal, 1, -1, c10::nullopt);  // not a softmax site
  EXPECT_TRUE(whole->lower_triangle_of.empty());
  EXPECT_LT(packed->nbytes(), whole->nbytes() * 6 / 10);
  EXPECT_EQ(packed->original_nbytes(), whole->original_nbytes());
  const at::Tensor y = dequantize(*packed);
  ASSERT_EQ(y.sizes(), causal.sizes());
  EXPECT_TRUE(y.masked_select(above).eq(0).all().item<bool>());
  // Within one 4-bit step of a group whose range is at most 1 (bf16 slack).
  EXPECT_LE((y - causal).abs().max().item<double>(), 1.01 / 15);
  // A softmax with no zero triangle is packed whole at the same site.
  const at::Tensor dense = at::softmax(at::randn({2, 3, t, t}, gen), -1);
  EXPECT_TRUE(state->compress(dense, 0, -1, c10::nullopt)->lower_triangle_of.empty());
  // Pickling: the site's flag, and the packed value with its triangle.
  EXPECT_TRUE(throughModuleArchive(state)->sites[0].triangular);
  EXPECT_FALSE(throughModuleArchive(state)->sites[1].triangular);
  EXPECT_TRUE(at::equal(dequantize(*PackedActivation::from_state(packed->state())), y));
  auto bad = packed->state();
  std::get<11>(bad) = {2, 3, t, t + 1};
  test::expect_error([&] { PackedActivation::from_state(bad); }, "does not hold the lower triangles of shape");
}

TEST(CompressionState, ConfigurationOnlyPickleLoads) {
  auto state = solvedState();
  auto loaded = CompressionState::load(c10::IValue(state->pickle()));
  expectSameConfiguration(*state, *loaded);
  EXPECT_TRUE(loaded->sites[0].range_cost.empty());
  EXPECT_FALSE(loaded->dirty);
  test::expect_error([&] { CompressionState::load(c10::IValue(int64_t(3))); },
                     "corrupted CompressionState (its saved state is a Int, not a tuple)");
  auto saved = state->save();
  std::get<1>(std::get<8>(saved)).pop_back();
  test::expect_error([&] { CompressionState::load(c10::IValue(saved)); },
                     "corrupted CompressionState (statistics of 3 sites for 4 sites)");
  saved = state->save();
  std::get<5>(std::get<8>(saved))[0].push_back(1.0);
  test::expect_error([&] { CompressionState::load(c10::IValue(saved)); },
                     "site 0 has 4 sample costs and 5 gradient norms");
}

TEST(CompressionState, CorruptedPickleIsReported) {
  auto state = solvedState();
  auto p = state->pickle();
  std::get<4>(p).pop_back();  // one floor short
  test::expect_error([&] { CompressionState::unpickle(p); }, "corrupted CompressionState (4 names, 4 widths, 3 floors");
  p = state->pickle();
  std::get<3>(p)[1] = 5;
  test::expect_error([&] { CompressionState::unpickle(p); }, "site 'bn1.input' has width 5");
  p = state->pickle();
  std::get<6>(p)[2] = -4;
  test::expect_error([&] { CompressionState::unpickle(p); }, "site 2 has flags -4; 1 = dither, 2 = batch norm");
}

// Archives saved before the batch-norm flag hold dither flags 0 / 1 in the
// same field, and those before normalized sites at most 3: they load, with
// no batch-norm or normalized site.
TEST(CompressionState, PickleOfDitherFlagsOnlyLoads) {
  auto state = solvedState();
  auto p = state->pickle();
  // Site 1: dither, batch norm, normalized per channel (1 << 2); site 3: a
  // layer norm over 2 dims ((2 + 1) << 2).
  EXPECT_EQ(std::get<6>(p), (std::vector<int64_t>{0, 7, 0, 12}));
  std::get<6>(p) = {0, 1, 0, 0};
  auto loaded = CompressionState::unpickle(p);
  EXPECT_TRUE(loaded->sites[1].dither);
  for (const auto& site : loaded->sites) {
    EXPECT_FALSE(site.batch_norm) << site.name;
    EXPECT_EQ(site.normalized, 0) << site.name;
  }
}

TEST(CompressionState, NonFloatingInputThrowsNamingTheSite) {
  auto state = makeState(2, {{"conv1.input", 4, 1}, {"relu2.output", 0, 1}});
  state->beginStep();
  test::expect_error([&] { state->compress(at::ones({2, 3}, at::kLong), 1, 1, c10::nullopt); },
                     "site 1 (relu2.output) holds a Long tensor");
  test::expect_error([&] { state->compress(at::ones({2, 3}, at::kInt), 0, 1, c10::nullopt); },
                     "site 0 (conv1.input) holds a Int tensor");
  test::expect_error([&] { state->compress(at::ones({2, 3}), 2, 1, c10::nullopt); },
                     "compression site 2 does not exist (2 sites)");
  test::expect_error([&] { state->observeGrad(at::ones({2, 3}), -1); }, "compression site -1 does not exist");
}

TEST(CompressionState, RankOneInputIsOneSample) {
  auto state = makeState(2, {{"mixed", 0, 1}, {"fixed", 4, 1}});
  state->beginStep();
  at::Generator gen = at::detail::createCPUGenerator(10);
  const at::Tensor v = at::randn({1000}, gen);
  for (int64_t k = 0; k < 2; ++k) {
    const auto p = state->compress(v, k, 1, c10::nullopt);
    EXPECT_EQ(p->bits.size(), 1u);
    EXPECT_EQ(p->lo.sizes(), (std::vector<int64_t>{1, 4}));  // one sample, 4 groups
    const at::Tensor y = dequantize(*p);
    EXPECT_EQ(y.sizes(), v.sizes());
    EXPECT_LE((y - v).abs().max().item<double>(), 1.05 * (v.max() - v.min()).item<double>() / double((1 << p->bits[0]) - 1));
  }
  EXPECT_EQ(state->sites[0].range_cost.size(), 1u);
  EXPECT_EQ(state->sites[0].sample_numel, 1000);
  // Its gradient is one sample too, so it is recorded.
  state->observeGrad(at::randn({5}, gen), 0);
  EXPECT_TRUE(state->sites[0].observed);
  EXPECT_TRUE(state->dirty);
}

TEST(CompressionState, GradientOfAnotherBatchIsIgnored) {
  auto state = makeState(2, {{"mixed", 0, 1}});
  state->beginStep();
  state->compress(at::randn({4, 100}), 0, -1, c10::nullopt);
  state->observeGrad(at::randn({3, 10}), 0);
  EXPECT_FALSE(state->sites[0].observed);
  EXPECT_FALSE(state->dirty);
  state->observeGrad(at::Tensor(), 0);  // an undefined gradient is no gradient
  EXPECT_FALSE(state->dirty);
}

TEST(CompressionState, SeedChangesEveryStepAndManualSeedReproducesIt) {
  auto state = makeState(2, {{"fixed", 2, 1}});
  at::Generator gen = at::detail::createCPUGenerator(11);
  const at::Tensor x = at::randn({4, 512}, gen);
  at::manual_seed(123);
  std::vector<uint64_t> seeds;
  std::vector<at::Tensor> codes;
  for (int s = 0; s < 4; ++s) {
    state->beginStep();
    seeds.push_back(state->seed);
    codes.push_back(state->compress(x, 0, 1, c10::nullopt)->codes);
  }
  EXPECT_EQ(state->steps, 4);
  for (int s = 1; s < 4; ++s) {
    EXPECT_NE(seeds[s], seeds[s - 1]);
    EXPECT_FALSE(at::equal(codes[s], codes[s - 1])) << "step " << s << " rounded like step " << s - 1;
  }
  // Reseeding LibTorch's generator replays the seeds, on a fresh state too.
  auto again = makeState(2, {{"fixed", 2, 1}});
  at::manual_seed(123);
  for (int s = 0; s < 4; ++s) {
    again->beginStep();
    EXPECT_EQ(again->seed, seeds[s]) << "step " << s;
    EXPECT_TRUE(at::equal(again->compress(x, 0, 1, c10::nullopt)->codes, codes[s])) << "step " << s;
  }
  at::manual_seed(124);
  again->beginStep();
  EXPECT_NE(again->seed, seeds[0]);
}

// Sites quantize with Philox key (seed, site): the same value at two sites
// in one step rounds independently.
TEST(CompressionState, SitesRoundIndependently) {
  auto state = makeState(2, {{"a", 2, 1}, {"b", 2, 1}});
  at::manual_seed(5);
  state->beginStep();
  const at::Tensor x = at::rand({4, 512});
  EXPECT_FALSE(at::equal(state->compress(x, 0, 1, c10::nullopt)->codes, state->compress(x, 1, 1, c10::nullopt)->codes));
}

}  // namespace
}  // namespace actnn
