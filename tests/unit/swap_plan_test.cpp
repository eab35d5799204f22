// Levels L4 (schedule-swap) and L5 (plan-memory) change where packed values
// live, never what they hold: with the same seeds, a module compiled at L4 or
// L5 gives L3's gradients bit for bit, step after step (the bit allocator
// sees the same statistics). Beyond that:
//  - what F swaps out leaves LibTorch's allocator: after forward, the device
//    holds exactly the swapped bytes less than at L3, and they are all back
//    (host bytes 0) once backward is done;
//  - the arena measures the first step of each input shape and plans the
//    others (no overflow, a valid placement, arena >= the peak of live bytes,
//    what producers wrote within what was planned).
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/serialization/import.h>

#include <ATen/ATen.h>

#include <map>
#include <string>

#include "actnn/actnn.h"
#include "actnn/runtime/arena.h"
#include "actnn/runtime/swap.h"
#include "memory_tracker.h"

namespace {

std::string modelPath(const std::string& name) { return std::string(ACTNN_TEST_MODELS_DIR) + "/" + name + ".pt"; }

torch::jit::Module compileAt(const std::string& name, const std::string& level) {
  actnn::Options options;
  options.level = level;
  return actnn::compile(torch::jit::load(modelPath(name)), options);
}

at::Tensor fixedRandn(at::IntArrayRef shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen);
}

std::map<std::string, at::Tensor> step(torch::jit::Module& m, const at::Tensor& x, uint64_t seed) {
  at::Tensor input = x.detach().clone().requires_grad_(true);
  for (const auto& p : m.parameters()) p.mutable_grad() = at::Tensor();
  at::manual_seed(seed);
  at::Tensor out = m.forward({input}).toTensor();
  (out * fixedRandn(out.sizes(), 99)).sum().backward();
  std::map<std::string, at::Tensor> g{{"<input>", input.grad()}};
  for (const auto& p : m.named_parameters())
    if (p.value.grad().defined()) g[p.name] = p.value.grad().detach().clone();
  return g;
}

void expectSame(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b,
                const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << what << ": no gradient for " << name;
    EXPECT_TRUE(at::equal(t, b.at(name))) << what << ": " << name << " differs";
  }
}

c10::intrusive_ptr<actnn::Arena> arenaOf(const torch::jit::Module& m) {
  return m.attr("_actnn_arena").toCustomClass<actnn::Arena>();
}

void expectValidPlan(const actnn::Arena& arena, const std::string& what) {
  const auto buffers = arena.lastBuffers();
  EXPECT_EQ(actnn::validateArenaPlan(buffers, arena.plan, arena.alignment), "") << what;
  EXPECT_GE(arena.plan.arena_bytes, arena.plan.lower_bound_bytes) << what;
  EXPECT_GT(arena.plan.lower_bound_bytes, 0) << what;
  EXPECT_GT(arena.used_bytes, 0) << what;
  EXPECT_LE(arena.used_bytes, arena.planned_bytes) << what;
  EXPECT_EQ(arena.overflows, 0) << what;
}

void expectLevelsAgree(const std::string& net, const at::Tensor& x, int steps) {
  torch::jit::Module l3 = compileAt(net, "L3"), l4 = compileAt(net, "L4"), l5 = compileAt(net, "L5");
  for (int k = 0; k < steps; ++k) {
    const auto g3 = step(l3, x, 100 + k);
    const auto g4 = step(l4, x, 100 + k);
    EXPECT_EQ(actnn::swapHostBytes(), 0) << net << ": host copies left after backward at L4";
    const auto g5 = step(l5, x, 100 + k);
    EXPECT_EQ(actnn::swapHostBytes(), 0) << net << ": host copies left after backward at L5";
    expectSame(g3, g4, net + " L4 step " + std::to_string(k));
    expectSame(g3, g5, net + " L5 step " + std::to_string(k));
  }
  auto arena = arenaOf(l5);
  EXPECT_EQ(arena->measured_steps, 1) << net;
  EXPECT_EQ(arena->planned_steps, steps - 1) << net;
  expectValidPlan(*arena, net);
}

TEST(SwapAndPlanSmallNet, GradientsEqualL3BitForBit) {
  expectLevelsAgree("stats_convnet", fixedRandn({8, 3, 12, 12}, 4), 3);
  expectLevelsAgree("stats_masks", fixedRandn({4, 3, 32, 32}, 5), 3);
}

TEST(SwapAndPlanSmallNet, SwappedBytesLeaveTheAllocator) {
  const at::Tensor x = fixedRandn({8, 3, 12, 12}, 4);
  torch::jit::Module l3 = compileAt("stats_convnet", "L3"), l4 = compileAt("stats_convnet", "L4");
  step(l3, x, 1);  // warm-up: first-use allocations
  step(l4, x, 1);
  auto heldAfterForward = [&](torch::jit::Module& m, int64_t* host) {
    at::manual_seed(7);
    actnn::tools::MemoryTracker tracker;
    at::Tensor out = m.forward({x}).toTensor();
    const int64_t held = tracker.live() - int64_t(out.nbytes());
    *host = actnn::swapHostBytes();
    out.sum().backward();
    return held;
  };
  int64_t host3 = 0, host4 = 0;
  const int64_t held3 = heldAfterForward(l3, &host3);
  const int64_t held4 = heldAfterForward(l4, &host4);
  EXPECT_EQ(host3, 0);
  EXPECT_GT(host4, 0);
  EXPECT_EQ(held3 - held4, host4) << "L3 holds " << held3 << " bytes after forward, L4 " << held4
                                  << " with " << host4 << " swapped out";
  EXPECT_EQ(actnn::swapHostBytes(), 0);
}

TEST(SwapAndPlanSmallNet, ArenaIsPlannedPerInputShape) {
  torch::jit::Module l3 = compileAt("stats_convnet", "L3"), l5 = compileAt("stats_convnet", "L5");
  const at::Tensor big = fixedRandn({8, 3, 12, 12}, 4), small = fixedRandn({3, 3, 12, 12}, 6);
  int k = 0;
  for (const at::Tensor* x : {&big, &big, &small, &small, &big}) {
    expectSame(step(l3, *x, 200 + k), step(l5, *x, 200 + k), "step " + std::to_string(k));
    ++k;
  }
  auto arena = arenaOf(l5);
  // Measured: the first big step, the first small one, the big one after them.
  EXPECT_EQ(arena->measured_steps, 3);
  EXPECT_EQ(arena->planned_steps, 2);
  EXPECT_EQ(arena->overflows, 0);
}

// Each step has its own arena: two forwards before their backwards (here
// in reverse order) each keep their packed values intact, at L4 and L5 as
// at L3.
TEST(SwapAndPlanSmallNet, InterleavedStepsKeepTheirOwnArenas) {
  const at::Tensor x = fixedRandn({8, 3, 12, 12}, 4), y = fixedRandn({8, 3, 12, 12}, 9);
  std::map<std::string, std::map<std::string, at::Tensor>> grads;
  for (const char* level : {"L3", "L4", "L5"}) {
    torch::jit::Module m = compileAt("stats_convnet", level);
    step(m, x, 1);  // L5: measures; the steps below are planned
    for (const auto& p : m.parameters()) p.mutable_grad() = at::Tensor();
    at::manual_seed(10);
    at::Tensor out_x = m.forward({x}).toTensor();
    at::manual_seed(11);
    at::Tensor out_y = m.forward({y}).toTensor();
    (out_y * fixedRandn(out_y.sizes(), 99)).sum().backward();
    (out_x * fixedRandn(out_x.sizes(), 98)).sum().backward();
    for (const auto& p : m.named_parameters()) grads[level][p.name] = p.value.grad().detach().clone();
    if (std::string(level) == "L5") {
      auto arena = arenaOf(m);
      EXPECT_EQ(arena->planned_steps, 2);
      EXPECT_EQ(arena->overflows, 0);
    }
  }
  expectSame(grads["L3"], grads["L4"], "L4, interleaved");
  expectSame(grads["L3"], grads["L5"], "L5, interleaved");
}

TEST(SwapAndPlan, ResNet18AtL5EqualsL3) {
  expectLevelsAgree("resnet18", fixedRandn({2, 3, 64, 64}, 8), 2);
}

}  // namespace
