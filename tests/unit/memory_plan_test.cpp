// The arena planner (runtime/memory_plan.h) against its contract: plans are
// valid (buffers alive at the same step never share bytes, offsets aligned,
// the arena covers every buffer), never below the peak of live bytes, exact
// where that peak is reachable by construction, and planArena is never worse
// than any single heuristic. The validator is tested on broken plans too, so
// that a checker which accepts everything cannot pass.
//
// data/convnext_tiny_l5.slots holds the arena slots of a real model (one
// "bytes first last" line per buffer, as `actnn-bench plan --dump` writes
// them): the input on which the first three heuristics left 15% over the
// lower bound. The test reading it needs ACTNN_TEST_DATA_DIR (a string
// literal naming tests/unit/data) and skips without it.
//
// Random instances mimic a training step: a forward of F steps then a
// backward of F steps; saved activations are created in the forward and die
// in the backward in reverse order (with a step of jitter), temporaries live
// a few steps, gradients live two steps in the backward; sizes are
// log-uniform over six orders of magnitude, some zero, some exact multiples
// of the alignment.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "actnn/runtime/memory_plan.h"

namespace actnn {
namespace {

using Planner = ArenaPlan (*)(const std::vector<PlanBuffer>&, int64_t);

struct NamedPlanner {
  const char* name;
  Planner plan;
};

const NamedPlanner kPlanners[] = {{"greedy_by_size", &planGreedyBySize},
                                  {"greedy_by_start", &planGreedyByStart},
                                  {"greedy_by_breadth", &planGreedyByBreadth},
                                  {"greedy_by_breadth_then_start", &planGreedyByBreadthThenStart},
                                  {"greedy_by_breadth_then_end", &planGreedyByBreadthThenEnd},
                                  {"arena", &planArena}};

const std::string kSqueakyWheel = "+squeaky_wheel";

int64_t alignUp(int64_t bytes, int64_t alignment) { return (bytes + alignment - 1) / alignment * alignment; }

// Runs every planner and checks the plan's contract; returns planArena's plan. planArena is never worse
// than the best single heuristic, and only a refined order ("+squeaky_wheel") may beat it.
ArenaPlan checkAllPlanners(const std::vector<PlanBuffer>& buffers, int64_t alignment) {
  const int64_t lower = liveBytesLowerBound(buffers, alignment);
  int64_t best_single = -1;
  ArenaPlan arena;
  for (const NamedPlanner& planner : kPlanners) {
    SCOPED_TRACE(planner.name);
    ArenaPlan plan = planner.plan(buffers, alignment);
    EXPECT_EQ(validateArenaPlan(buffers, plan, alignment), "");
    EXPECT_EQ(plan.offsets.size(), buffers.size());
    EXPECT_EQ(plan.lower_bound_bytes, lower);
    EXPECT_GE(plan.arena_bytes, lower);
    int64_t top = 0;
    for (size_t i = 0; i < buffers.size(); ++i)
      if (buffers[i].bytes > 0) top = std::max(top, plan.offsets[i] + alignUp(buffers[i].bytes, alignment));
    EXPECT_EQ(plan.arena_bytes, top);
    if (planner.plan == &planArena) {
      const bool refined = plan.heuristic.size() > kSqueakyWheel.size() &&
                           plan.heuristic.compare(plan.heuristic.size() - kSqueakyWheel.size(),
                                                  kSqueakyWheel.size(), kSqueakyWheel) == 0;
      if (refined)
        EXPECT_LT(plan.arena_bytes, best_single);
      else
        EXPECT_EQ(plan.arena_bytes, best_single);
      const std::string order =
          refined ? plan.heuristic.substr(0, plan.heuristic.size() - kSqueakyWheel.size()) : plan.heuristic;
      bool known = false;
      for (const NamedPlanner& other : kPlanners)
        known = known || (other.plan != &planArena && order == other.name);
      EXPECT_TRUE(known) << plan.heuristic;
      arena = std::move(plan);
    } else {
      EXPECT_EQ(plan.heuristic, planner.name);
      best_single = best_single < 0 ? plan.arena_bytes : std::min(best_single, plan.arena_bytes);
    }
  }
  return arena;
}

int64_t randomSize(std::mt19937& rng, int64_t alignment) {
  const int kind = std::uniform_int_distribution<int>(0, 9)(rng);
  if (kind == 0) return 0;
  const double log_size = std::uniform_real_distribution<double>(0.0, 20.0)(rng);
  const int64_t bytes = int64_t(std::exp2(log_size));
  return kind == 1 ? alignUp(bytes, alignment) : bytes;
}

std::vector<PlanBuffer> trainingSchedule(std::mt19937& rng, int64_t alignment) {
  const int64_t steps = std::uniform_int_distribution<int64_t>(1, 60)(rng);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<PlanBuffer> buffers;
  for (int64_t i = 0; i < steps; ++i) {
    if (unit(rng) < 0.7) {
      // Saved activation: dies where the backward reaches the node that made it.
      const int64_t jitter = std::uniform_int_distribution<int64_t>(-1, 1)(rng);
      buffers.push_back({randomSize(rng, alignment), i, std::max(i, 2 * steps - 1 - i + jitter)});
    }
    const int64_t temporaries = std::uniform_int_distribution<int64_t>(0, 2)(rng);
    for (int64_t t = 0; t < temporaries; ++t) {
      const int64_t first = std::uniform_int_distribution<int64_t>(0, 2 * steps - 1)(rng);
      const int64_t life = std::uniform_int_distribution<int64_t>(0, 3)(rng);
      buffers.push_back({randomSize(rng, alignment), first, first + life});
    }
    // Gradient of the backward step F + i: made there, consumed by the next step.
    if (unit(rng) < 0.8) buffers.push_back({randomSize(rng, alignment), steps + i, steps + i + 1});
  }
  std::shuffle(buffers.begin(), buffers.end(), rng);
  return buffers;
}

TEST(MemoryPlan, DisjointLifetimesShareOffsetZero) {
  const std::vector<PlanBuffer> buffers = {{100, 0, 1}, {640, 2, 2}, {64, 3, 7}, {300, 8, 9}};
  const ArenaPlan plan = checkAllPlanners(buffers, 64);
  for (int64_t offset : plan.offsets) EXPECT_EQ(offset, 0);
  EXPECT_EQ(plan.arena_bytes, 640);
  EXPECT_EQ(plan.lower_bound_bytes, 640);
}

TEST(MemoryPlan, AllOverlappingTakesTheSum) {
  const std::vector<PlanBuffer> buffers = {{128, 0, 5}, {64, 5, 9}, {256, 2, 5}, {192, 5, 5}};
  const ArenaPlan plan = checkAllPlanners(buffers, 64);
  EXPECT_EQ(plan.arena_bytes, 640);
  EXPECT_EQ(plan.lower_bound_bytes, 640);
}

TEST(MemoryPlan, EmptyInputGivesEmptyArena) {
  const ArenaPlan plan = checkAllPlanners({}, 64);
  EXPECT_TRUE(plan.offsets.empty());
  EXPECT_EQ(plan.arena_bytes, 0);
  EXPECT_EQ(plan.lower_bound_bytes, 0);
}

TEST(MemoryPlan, ZeroByteBuffersTakeNoSpace) {
  const std::vector<PlanBuffer> buffers = {{0, 0, 9}, {64, 0, 9}, {0, 3, 4}, {128, 2, 6}, {0, 5, 5}};
  const ArenaPlan plan = checkAllPlanners(buffers, 64);
  EXPECT_EQ(plan.offsets[0], 0);
  EXPECT_EQ(plan.offsets[2], 0);
  EXPECT_EQ(plan.offsets[4], 0);
  EXPECT_EQ(plan.arena_bytes, 192);
  EXPECT_EQ(liveBytesLowerBound({{0, 0, 1}, {0, 1, 2}}, 64), 0);
  EXPECT_EQ(planArena({{0, 0, 1}, {0, 1, 2}}, 64).arena_bytes, 0);
}

TEST(MemoryPlan, SizesRoundUpToTheAlignment) {
  const std::vector<PlanBuffer> buffers = {{1, 0, 3}, {65, 1, 2}, {64, 2, 3}};
  // Aligned to 64: 64 + 128 + 64 live at step 2.
  const ArenaPlan plan = checkAllPlanners(buffers, 64);
  EXPECT_EQ(plan.lower_bound_bytes, 256);
  EXPECT_EQ(plan.arena_bytes, 256);
  for (int64_t offset : plan.offsets) EXPECT_EQ(offset % 64, 0);
  // Unaligned, the same buffers pack byte-tight.
  EXPECT_EQ(checkAllPlanners(buffers, 1).arena_bytes, 130);
  EXPECT_EQ(checkAllPlanners(buffers, 256).arena_bytes, 768);
}

TEST(MemoryPlan, BestFitTakesTheSmallestHole) {
  // Byte-aligned. T and S pin Q at 13 and R at 25; P then takes [0, 10), so step 1 has holes of 3 bytes
  // at 10 and 2 bytes at 23. Z (2 bytes, step 1) goes into the smaller one; first fit would take 10.
  const std::vector<PlanBuffer> buffers = {{25, 2, 2} /*T*/, {13, 0, 0} /*S*/, {10, 0, 1} /*Q*/,
                                           {10, 1, 2} /*R*/, {10, 1, 1} /*P*/, {2, 1, 1} /*Z*/};
  const ArenaPlan plan = planGreedyBySize(buffers, 1);
  EXPECT_EQ(validateArenaPlan(buffers, plan, 1), "");
  EXPECT_EQ(plan.offsets, (std::vector<int64_t>{0, 0, 13, 25, 0, 23}));
  EXPECT_EQ(plan.arena_bytes, 35);
}

TEST(MemoryPlan, BreadthThenStartStacksAPeakInTimeOrder) {
  // Byte-aligned. C, A and B are alive at step 3, the peak (6 + 7 + 5 = 18), so they share its breadth;
  // D is alive with C alone at step 2 (14). In time order C goes first, at 0, A and B stack over it,
  // and D fits over C at step 2: the lower bound. Longest first (breadth) puts A at 0 and C over it,
  // which leaves D 7 bytes below C where it needs 8: 21. Size and start put D and A at 0 first and C
  // over D, and B no longer fits between A and C: 19.
  const std::vector<PlanBuffer> buffers = {{7, 3, 6} /*A*/, {5, 3, 3} /*B*/,
                                           {6, 2, 4} /*C*/, {8, 2, 2} /*D*/};
  const ArenaPlan plan = planGreedyByBreadthThenStart(buffers, 1);
  EXPECT_EQ(validateArenaPlan(buffers, plan, 1), "");
  EXPECT_EQ(plan.offsets, (std::vector<int64_t>{6, 13, 0, 6}));
  EXPECT_EQ(plan.arena_bytes, 18);
  EXPECT_EQ(plan.lower_bound_bytes, 18);
  EXPECT_EQ(planGreedyBySize(buffers, 1).arena_bytes, 19);
  EXPECT_EQ(planGreedyByStart(buffers, 1).arena_bytes, 19);
  EXPECT_EQ(planGreedyByBreadth(buffers, 1).arena_bytes, 21);
  EXPECT_EQ(planGreedyByBreadthThenEnd(buffers, 1).arena_bytes, 21);
  const ArenaPlan arena = checkAllPlanners(buffers, 1);
  EXPECT_EQ(arena.arena_bytes, 18);
  EXPECT_EQ(arena.heuristic, "greedy_by_breadth_then_start");
}

TEST(MemoryPlan, BreadthThenEndIsTheMirrorImage) {
  // The case above with time reversed (step s becomes 8 - s): now only the order by last step reaches
  // the lower bound, and the order by first step does what longest first did.
  const std::vector<PlanBuffer> buffers = {{7, 2, 5} /*A*/, {5, 5, 5} /*B*/,
                                           {6, 4, 6} /*C*/, {8, 6, 6} /*D*/};
  const ArenaPlan plan = planGreedyByBreadthThenEnd(buffers, 1);
  EXPECT_EQ(validateArenaPlan(buffers, plan, 1), "");
  EXPECT_EQ(plan.offsets, (std::vector<int64_t>{6, 13, 0, 6}));
  EXPECT_EQ(plan.arena_bytes, 18);
  EXPECT_EQ(planGreedyByBreadthThenStart(buffers, 1).arena_bytes, 21);
  const ArenaPlan arena = checkAllPlanners(buffers, 1);
  EXPECT_EQ(arena.arena_bytes, 18);
  EXPECT_EQ(arena.heuristic, "greedy_by_breadth_then_end");
}

TEST(MemoryPlan, SqueakyWheelMovesTheTopBufferFirst) {
  // Byte-aligned; the lower bound is 11 (C and D at steps 2-3). By size, D and A take 0, C goes over D,
  // and B, which meets A at step 6 and C at step 5, lands on top of C: 14. Every other order ends at
  // 14 too. B reached the top, so the refinement places it first, at 0: A goes over it, C over D, 11.
  const std::vector<PlanBuffer> buffers = {{6, 6, 6} /*A*/, {3, 5, 8} /*B*/,
                                           {5, 1, 5} /*C*/, {6, 2, 3} /*D*/};
  EXPECT_EQ(planGreedyBySize(buffers, 1).offsets, (std::vector<int64_t>{0, 11, 6, 0}));
  const ArenaPlan plan = checkAllPlanners(buffers, 1);
  EXPECT_EQ(plan.heuristic, "greedy_by_size+squeaky_wheel");
  EXPECT_EQ(plan.offsets, (std::vector<int64_t>{3, 0, 6, 0}));
  EXPECT_EQ(plan.arena_bytes, 11);
  EXPECT_EQ(plan.lower_bound_bytes, 11);
}

TEST(MemoryPlan, ConvNextTinyL5SlotsWithinTwoPercent) {
#ifndef ACTNN_TEST_DATA_DIR
  GTEST_SKIP() << "ACTNN_TEST_DATA_DIR is not defined";
#else
  const std::string path = std::string(ACTNN_TEST_DATA_DIR) + "/convnext_tiny_l5.slots";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot read " << path;
  std::vector<PlanBuffer> buffers;
  PlanBuffer buffer;
  while (in >> buffer.bytes >> buffer.first >> buffer.last) buffers.push_back(buffer);
  ASSERT_TRUE(in.eof()) << path << ": not \"bytes first last\" lines";
  ASSERT_EQ(buffers.size(), 268u);
  const ArenaPlan plan = checkAllPlanners(buffers, 64);
  EXPECT_EQ(plan.lower_bound_bytes, 5061504);
  EXPECT_LE(double(plan.arena_bytes), 1.02 * double(plan.lower_bound_bytes)) << plan.heuristic;
#endif
}

TEST(MemoryPlan, InvalidInputThrowsWithTheIndex) {
  for (const NamedPlanner& planner : kPlanners) {
    SCOPED_TRACE(planner.name);
    try {
      planner.plan({{64, 0, 1}, {64, 1, 2}, {-1, 0, 0}}, 64);
      ADD_FAILURE() << "negative size accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("buffer 2"), std::string::npos) << e.what();
    }
    try {
      planner.plan({{64, 0, 1}, {64, 5, 4}}, 64);
      ADD_FAILURE() << "last < first accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("buffer 1"), std::string::npos) << e.what();
    }
    EXPECT_THROW(planner.plan({{64, 0, 1}}, 0), std::invalid_argument);
  }
  EXPECT_THROW(liveBytesLowerBound({{-5, 0, 0}}, 64), std::invalid_argument);
}

TEST(MemoryPlan, ValidatorCatchesBrokenPlans) {
  const std::vector<PlanBuffer> buffers = {{64, 0, 2}, {100, 2, 4}, {64, 3, 5}, {64, 6, 7}};
  const ArenaPlan good = planArena(buffers, 64);
  ASSERT_EQ(validateArenaPlan(buffers, good, 64), "");

  // Buffers 0 and 1 meet at step 2: put them on the same bytes.
  ArenaPlan clash = good;
  clash.offsets = {0, 0, 128, 0};
  clash.arena_bytes = 192;
  const std::string message = validateArenaPlan(buffers, clash, 64);
  EXPECT_NE(message.find("buffer 0"), std::string::npos) << message;
  EXPECT_NE(message.find("buffer 1"), std::string::npos) << message;
  // Partial overlap of the aligned ranges (buffer 1 takes 128 bytes) is caught too.
  clash.offsets = {128, 64, 0, 0};
  EXPECT_NE(validateArenaPlan(buffers, clash, 64), "");
  // Buffers 0 and 3 never meet: sharing bytes is fine.
  ArenaPlan shared = good;
  shared.offsets = {0, 64, 192, 0};
  shared.arena_bytes = 256;
  EXPECT_EQ(validateArenaPlan(buffers, shared, 64), "");

  ArenaPlan misaligned = shared;
  misaligned.offsets[3] = 32;
  EXPECT_NE(validateArenaPlan(buffers, misaligned, 64).find("buffer 3"), std::string::npos);
  ArenaPlan too_small = shared;
  too_small.arena_bytes = 255;
  EXPECT_NE(validateArenaPlan(buffers, too_small, 64).find("buffer 2"), std::string::npos);
  ArenaPlan negative = shared;
  negative.offsets[0] = -64;
  EXPECT_NE(validateArenaPlan(buffers, negative, 64), "");
  ArenaPlan short_plan = shared;
  short_plan.offsets.pop_back();
  EXPECT_NE(validateArenaPlan(buffers, short_plan, 64), "");
  EXPECT_NE(validateArenaPlan({{64, 3, 2}}, ArenaPlan{{0}, 64, 64, ""}, 64), "");
}

TEST(MemoryPlan, RandomTrainingSchedulesAreValid) {
  const int64_t alignments[] = {1, 16, 64, 256};
  for (uint32_t seed = 0; seed < 400; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    const int64_t alignment = alignments[seed % 4];
    const std::vector<PlanBuffer> buffers = trainingSchedule(rng, alignment);
    const ArenaPlan plan = checkAllPlanners(buffers, alignment);
    // The worst seed here measured 1.06 with the first three heuristics and 1.035 with planArena now
    // (the lower bound is not always reachable); a regression in the heuristics shows up as a larger
    // ratio.
    EXPECT_LE(double(plan.arena_bytes), 1.1 * double(plan.lower_bound_bytes));
  }
}

TEST(MemoryPlan, StackScheduleReachesTheLowerBound) {
  // Nested lifetimes: every buffer is alive at steps n - 1 and n, so the arena is the sum.
  for (uint32_t seed = 0; seed < 20; ++seed) {
    std::mt19937 rng(seed);
    const int64_t n = 1 + seed * 10;
    std::vector<PlanBuffer> buffers;
    int64_t sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      buffers.push_back({randomSize(rng, 64), i, 2 * n - 1 - i});
      sum += alignUp(buffers.back().bytes, 64);
    }
    const ArenaPlan plan = checkAllPlanners(buffers, 64);
    EXPECT_EQ(plan.lower_bound_bytes, sum);
    EXPECT_EQ(plan.arena_bytes, plan.lower_bound_bytes);
  }
}

TEST(MemoryPlan, EqualSizesByStartReachTheLowerBound) {
  // Interval colouring: first fit in order of first step is optimal when all sizes are equal.
  for (uint32_t seed = 0; seed < 50; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    std::vector<PlanBuffer> buffers;
    for (int i = 0; i < 200; ++i) {
      const int64_t first = std::uniform_int_distribution<int64_t>(0, 100)(rng);
      buffers.push_back({100, first, first + std::uniform_int_distribution<int64_t>(0, 20)(rng)});
    }
    const ArenaPlan plan = planGreedyByStart(buffers, 64);
    EXPECT_EQ(validateArenaPlan(buffers, plan, 64), "");
    EXPECT_EQ(plan.arena_bytes, plan.lower_bound_bytes);
    EXPECT_EQ(planArena(buffers, 64).arena_bytes, plan.lower_bound_bytes);
  }
}

TEST(MemoryPlan, SwapScheduleIsNearTheLowerBound) {
  // A forward whose buffers each live 2 steps (made by one node, read by the next), then a backward
  // whose buffers each live k + 1 steps (a gradient and the k steps that read it).
  for (uint32_t seed = 0; seed < 40; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    const int64_t n = 50 + seed * 5, k = 1 + seed % 6;
    std::vector<PlanBuffer> buffers;
    for (int64_t i = 0; i < n; ++i) buffers.push_back({randomSize(rng, 64), i, i + 1});
    for (int64_t i = 0; i < n; ++i) buffers.push_back({randomSize(rng, 64), n + 1 + i, n + 1 + i + k});
    const ArenaPlan plan = checkAllPlanners(buffers, 64);
    EXPECT_LE(double(plan.arena_bytes), 1.02 * double(plan.lower_bound_bytes));
  }
}

TEST(MemoryPlan, LargeInstanceIsValidAndDeterministic) {
  std::mt19937 rng(12345);
  std::vector<PlanBuffer> buffers;
  while (buffers.size() < 2000) {
    std::vector<PlanBuffer> more = trainingSchedule(rng, 64);
    buffers.insert(buffers.end(), more.begin(), more.end());
  }
  buffers.resize(2000);
  const ArenaPlan plan = checkAllPlanners(buffers, 64);
  const ArenaPlan again = planArena(buffers, 64);
  EXPECT_EQ(plan.offsets, again.offsets);
  EXPECT_EQ(plan.heuristic, again.heuristic);
}

}  // namespace
}  // namespace actnn
