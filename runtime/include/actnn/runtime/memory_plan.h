// Static memory planning: place buffers of known sizes and lifetimes in one
// arena so that buffers alive at the same step never share bytes, keeping
// the arena small. Finding the smallest arena is NP-hard (dynamic storage
// allocation); the planners here are greedy heuristics, plus a refinement of
// their orders, checked against the peak of live bytes, which no placement can
// beat. Plain C++, no LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace actnn {

// One buffer of the plan: `bytes` live over the inclusive step range [first, last]
// of a linear timeline (the forward graph's nodes, then the backward graph's).
struct PlanBuffer {
  int64_t bytes = 0;
  int64_t first = 0;
  int64_t last = 0;
};

struct ArenaPlan {
  std::vector<int64_t> offsets;   // one per buffer, each a multiple of `alignment`
  int64_t arena_bytes = 0;        // max over buffers of offset + aligned size
  int64_t lower_bound_bytes = 0;  // max over steps of the sum of aligned sizes live at that step
  std::string heuristic;          // which heuristic produced `offsets`
};

// Every function below throws std::invalid_argument naming the buffer index for
// a negative size or last < first, and for an alignment < 1. Zero-byte buffers
// get offset 0 and take no space. All results are deterministic.

// The peak of live bytes (sizes rounded up to `alignment`): no placement can use less.
int64_t liveBytesLowerBound(const std::vector<PlanBuffer>& buffers, int64_t alignment = 64);

// Each heuristic alone (exposed for tests and the benchmark):

// Decreasing aligned size (ties: earlier first, then index); each buffer takes the
// smallest gap that fits among the already placed buffers whose lifetimes overlap
// (best fit), else goes above them. heuristic = "greedy_by_size".
ArenaPlan planGreedyBySize(const std::vector<PlanBuffer>& buffers, int64_t alignment = 64);

// Increasing first step (ties: larger, then longer-lived, then index); each buffer
// takes the lowest gap that fits (first fit). Optimal when all sizes are equal
// (interval graph colouring). heuristic = "greedy_by_start".
ArenaPlan planGreedyByStart(const std::vector<PlanBuffer>& buffers, int64_t alignment = 64);

// Decreasing breadth, the largest total of live bytes at any step the buffer spans
// (ties: longer-lived, larger, earlier first, index), so the buffers of the peak go
// first; best fit as in planGreedyBySize. heuristic = "greedy_by_breadth".
ArenaPlan planGreedyByBreadth(const std::vector<PlanBuffer>& buffers, int64_t alignment = 64);

// Decreasing breadth as in planGreedyByBreadth, but ties (the buffers that share a peak) go in order of
// first step (then larger, longer-lived, index): each peak's buffers are stacked in time order. Best fit.
// heuristic = "greedy_by_breadth_then_start".
ArenaPlan planGreedyByBreadthThenStart(const std::vector<PlanBuffer>& buffers, int64_t alignment = 64);

// The mirror image of planGreedyByBreadthThenStart in time: ties go by last step, latest first (then
// larger, earlier first, index). Best fit. heuristic = "greedy_by_breadth_then_end".
ArenaPlan planGreedyByBreadthThenEnd(const std::vector<PlanBuffer>& buffers, int64_t alignment = 64);

// Runs every heuristic above (size, start, breadth, breadth then start, breadth then end;
// ties: the first) and, while the best arena is above the lower bound, refines each of
// their orders by the squeaky wheel: the buffers that reach the top of the arena move to
// the front of the order and it is placed again, up to 16 rounds per order. Keeps the
// smallest arena; `heuristic` names the order it came from, with "+squeaky_wheel"
// appended when a refined order won.
ArenaPlan planArena(const std::vector<PlanBuffer>& buffers, int64_t alignment = 64);

// Checks a plan: every pair of buffers whose lifetimes intersect occupy disjoint byte ranges, offsets
// aligned, arena_bytes covers all. Returns an empty string when valid, else a message naming the two
// buffers (or the one buffer at fault). Never throws on a bad plan or bad buffers.
std::string validateArenaPlan(const std::vector<PlanBuffer>& buffers, const ArenaPlan& plan,
                              int64_t alignment = 64);

}  // namespace actnn
