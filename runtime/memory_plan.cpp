// Static arena planning (dynamic storage allocation with known lifetimes).
//
// Sizes are rounded up to the alignment first, so every offset a planner picks
// as a sum of aligned sizes is itself aligned. Zero-byte buffers are left at
// offset 0 and never enter placement: they conflict with nothing.
//
// Lower bound: the live bytes only grow at a buffer's first step, so their
// peak is at one of those steps. A sweep over the distinct first steps (starts
// sorted by first, ends by last, two pointers) gets the live bytes at each in
// O(n log n).
//
// All three heuristics share one placement loop: take the buffers in the
// heuristic's order; for each, gather the placed buffers whose lifetimes
// overlap its own, sort them by offset and walk the gaps between them from 0
// (a running maximum of their ends, since buffers that never meet in time may
// overlap in space). The buffer goes into a gap that fits, else at the top,
// the largest end among them. O(n) to gather plus O(k log k) to sort for the
// k conflicts: O(n^2 log n) in all, a few tens of milliseconds at n = 2000.
//
//  * greedy by size (best fit): the big buffers take the low offsets while the
//    arena is still empty and the small ones fill the holes between them; best
//    fit keeps the large holes for buffers that need them.
//  * greedy by start (first fit): the classic interval-colouring order. With
//    equal sizes it reaches the lower bound exactly (every placed buffer that
//    conflicts with the new one is alive at its first step, so fewer than the
//    peak count of slots are taken there); with mixed sizes it seldom wins.
//  * greedy by breadth (best fit): the breadth of a buffer is the peak of live
//    bytes over its lifetime (range maximum over the sweep's steps, sparse
//    table: O(n log n)). The buffers alive at the worst step, which decide the
//    arena, are placed first and pack tightly; the rest fit around them. Among
//    equal breadths (every buffer alive at the peak has the same one) longer
//    lifetimes go first: they constrain the most steps, and the short-lived
//    ones then fill the holes they leave. On random forward/backward schedules
//    this tie order cut the mean excess over the lower bound from 5% to 0.7%,
//    against size as the tie-break.
//
// planArena runs all three and keeps the smallest arena (ties: the first).
#include "actnn/runtime/memory_plan.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace actnn {
namespace {

enum class Fit { kBest, kFirst };

void checkAlignment(int64_t alignment) {
  if (alignment < 1)
    throw std::invalid_argument("memory plan: alignment " + std::to_string(alignment) + " < 1");
}

std::string describe(const std::vector<PlanBuffer>& buffers, size_t i) {
  const PlanBuffer& b = buffers[i];
  return "buffer " + std::to_string(i) + " (" + std::to_string(b.bytes) + " bytes, steps [" +
         std::to_string(b.first) + ", " + std::to_string(b.last) + "])";
}

// Empty when buffer i is well formed, else why not; shared by the planners (which throw) and the
// validator (which reports).
std::string bufferError(const std::vector<PlanBuffer>& buffers, size_t i, int64_t alignment) {
  const PlanBuffer& b = buffers[i];
  if (b.bytes < 0) return describe(buffers, i) + " has a negative size";
  if (b.last < b.first) return describe(buffers, i) + " ends before it starts";
  if (b.bytes > std::numeric_limits<int64_t>::max() - (alignment - 1))
    return describe(buffers, i) + " overflows when rounded up to the alignment";
  return "";
}

int64_t alignUp(int64_t bytes, int64_t alignment) { return (bytes + alignment - 1) / alignment * alignment; }

// Validates the input and returns the aligned sizes.
std::vector<int64_t> alignedSizes(const std::vector<PlanBuffer>& buffers, int64_t alignment) {
  checkAlignment(alignment);
  std::vector<int64_t> sizes(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    std::string error = bufferError(buffers, i, alignment);
    if (!error.empty()) throw std::invalid_argument("memory plan: " + error);
    sizes[i] = alignUp(buffers[i].bytes, alignment);
  }
  return sizes;
}

bool overlap(const PlanBuffer& a, const PlanBuffer& b) { return a.first <= b.last && b.first <= a.last; }

// The live bytes at each distinct first step (ascending `steps`, `live` alongside).
struct LiveProfile {
  std::vector<int64_t> steps, live;
};

LiveProfile liveProfile(const std::vector<PlanBuffer>& buffers, const std::vector<int64_t>& sizes) {
  std::vector<size_t> by_first, by_last;
  for (size_t i = 0; i < buffers.size(); ++i) {
    if (sizes[i] == 0) continue;
    by_first.push_back(i);
    by_last.push_back(i);
  }
  std::sort(by_first.begin(), by_first.end(),
            [&](size_t a, size_t b) { return buffers[a].first < buffers[b].first; });
  std::sort(by_last.begin(), by_last.end(),
            [&](size_t a, size_t b) { return buffers[a].last < buffers[b].last; });
  LiveProfile profile;
  int64_t live = 0;
  size_t ended = 0;
  for (size_t s = 0; s < by_first.size();) {
    const int64_t step = buffers[by_first[s]].first;
    for (; s < by_first.size() && buffers[by_first[s]].first == step; ++s) live += sizes[by_first[s]];
    for (; ended < by_last.size() && buffers[by_last[ended]].last < step; ++ended)
      live -= sizes[by_last[ended]];
    profile.steps.push_back(step);
    profile.live.push_back(live);
  }
  return profile;
}

int64_t peak(const LiveProfile& profile) {
  int64_t best = 0;
  for (int64_t v : profile.live) best = std::max(best, v);
  return best;
}

// Places the nonzero buffers in `order`; see the top of the file.
std::vector<int64_t> place(const std::vector<PlanBuffer>& buffers, const std::vector<int64_t>& sizes,
                           const std::vector<size_t>& order, Fit fit) {
  std::vector<int64_t> offsets(buffers.size(), 0);
  std::vector<size_t> placed;
  placed.reserve(order.size());
  std::vector<size_t> conflicts;
  for (size_t i : order) {
    if (sizes[i] == 0) continue;
    conflicts.clear();
    for (size_t j : placed)
      if (overlap(buffers[i], buffers[j])) conflicts.push_back(j);
    std::sort(conflicts.begin(), conflicts.end(),
              [&](size_t a, size_t b) { return offsets[a] != offsets[b] ? offsets[a] < offsets[b] : a < b; });
    int64_t cursor = 0;
    int64_t chosen = -1, chosen_gap = std::numeric_limits<int64_t>::max();
    for (size_t j : conflicts) {
      const int64_t gap = offsets[j] - cursor;
      if (gap >= sizes[i] && gap < chosen_gap) {
        chosen = cursor;
        chosen_gap = gap;
        if (fit == Fit::kFirst) break;
      }
      cursor = std::max(cursor, offsets[j] + sizes[j]);
    }
    offsets[i] = chosen >= 0 ? chosen : cursor;
    placed.push_back(i);
  }
  return offsets;
}

ArenaPlan finish(std::vector<int64_t> offsets, const std::vector<int64_t>& sizes, int64_t lower_bound,
                 const char* heuristic) {
  ArenaPlan plan;
  for (size_t i = 0; i < sizes.size(); ++i)
    if (sizes[i] > 0) plan.arena_bytes = std::max(plan.arena_bytes, offsets[i] + sizes[i]);
  plan.offsets = std::move(offsets);
  plan.lower_bound_bytes = lower_bound;
  plan.heuristic = heuristic;
  return plan;
}

std::vector<size_t> indices(size_t n) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  return order;
}

}  // namespace

int64_t liveBytesLowerBound(const std::vector<PlanBuffer>& buffers, int64_t alignment) {
  const std::vector<int64_t> sizes = alignedSizes(buffers, alignment);
  return peak(liveProfile(buffers, sizes));
}

ArenaPlan planGreedyBySize(const std::vector<PlanBuffer>& buffers, int64_t alignment) {
  const std::vector<int64_t> sizes = alignedSizes(buffers, alignment);
  std::vector<size_t> order = indices(buffers.size());
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (sizes[a] != sizes[b]) return sizes[a] > sizes[b];
    if (buffers[a].first != buffers[b].first) return buffers[a].first < buffers[b].first;
    return a < b;
  });
  return finish(place(buffers, sizes, order, Fit::kBest), sizes, peak(liveProfile(buffers, sizes)),
                "greedy_by_size");
}

ArenaPlan planGreedyByStart(const std::vector<PlanBuffer>& buffers, int64_t alignment) {
  const std::vector<int64_t> sizes = alignedSizes(buffers, alignment);
  std::vector<size_t> order = indices(buffers.size());
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (buffers[a].first != buffers[b].first) return buffers[a].first < buffers[b].first;
    if (sizes[a] != sizes[b]) return sizes[a] > sizes[b];
    if (buffers[a].last != buffers[b].last) return buffers[a].last > buffers[b].last;
    return a < b;
  });
  return finish(place(buffers, sizes, order, Fit::kFirst), sizes, peak(liveProfile(buffers, sizes)),
                "greedy_by_start");
}

ArenaPlan planGreedyByBreadth(const std::vector<PlanBuffer>& buffers, int64_t alignment) {
  const std::vector<int64_t> sizes = alignedSizes(buffers, alignment);
  const LiveProfile profile = liveProfile(buffers, sizes);
  const size_t m = profile.live.size();
  // Sparse table over the profile: table[k][s] = max of live[s .. s + 2^k - 1].
  std::vector<std::vector<int64_t>> table{profile.live};
  for (size_t width = 2; width <= m; width *= 2) {
    const std::vector<int64_t>& prev = table.back();
    std::vector<int64_t> next(m - width + 1);
    for (size_t s = 0; s < next.size(); ++s) next[s] = std::max(prev[s], prev[s + width / 2]);
    table.push_back(std::move(next));
  }
  std::vector<int64_t> breadth(buffers.size(), 0);
  for (size_t i = 0; i < buffers.size(); ++i) {
    if (sizes[i] == 0) continue;
    // The buffer's own first step is in the profile, so the range [lo, hi) is never empty.
    const size_t lo = std::lower_bound(profile.steps.begin(), profile.steps.end(), buffers[i].first) -
                      profile.steps.begin();
    const size_t hi =
        std::upper_bound(profile.steps.begin(), profile.steps.end(), buffers[i].last) - profile.steps.begin();
    size_t k = 0;
    while ((size_t(2) << k) <= hi - lo) ++k;
    breadth[i] = std::max(table[k][lo], table[k][hi - (size_t(1) << k)]);
  }
  std::vector<size_t> order = indices(buffers.size());
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (breadth[a] != breadth[b]) return breadth[a] > breadth[b];
    const int64_t life_a = buffers[a].last - buffers[a].first, life_b = buffers[b].last - buffers[b].first;
    if (life_a != life_b) return life_a > life_b;
    if (sizes[a] != sizes[b]) return sizes[a] > sizes[b];
    if (buffers[a].first != buffers[b].first) return buffers[a].first < buffers[b].first;
    return a < b;
  });
  return finish(place(buffers, sizes, order, Fit::kBest), sizes, peak(profile), "greedy_by_breadth");
}

ArenaPlan planArena(const std::vector<PlanBuffer>& buffers, int64_t alignment) {
  ArenaPlan best = planGreedyBySize(buffers, alignment);
  for (ArenaPlan (*planner)(const std::vector<PlanBuffer>&, int64_t) :
       {&planGreedyByStart, &planGreedyByBreadth}) {
    ArenaPlan plan = planner(buffers, alignment);
    if (plan.arena_bytes < best.arena_bytes) best = std::move(plan);
  }
  return best;
}

std::string validateArenaPlan(const std::vector<PlanBuffer>& buffers, const ArenaPlan& plan,
                              int64_t alignment) {
  if (alignment < 1) return "alignment " + std::to_string(alignment) + " < 1";
  if (plan.offsets.size() != buffers.size())
    return std::to_string(plan.offsets.size()) + " offsets for " + std::to_string(buffers.size()) +
           " buffers";
  if (plan.arena_bytes < 0) return "arena of " + std::to_string(plan.arena_bytes) + " bytes";
  std::vector<int64_t> sizes(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    std::string error = bufferError(buffers, i, alignment);
    if (!error.empty()) return error;
    sizes[i] = alignUp(buffers[i].bytes, alignment);
    const int64_t offset = plan.offsets[i];
    const std::string at = describe(buffers, i) + " at offset " + std::to_string(offset);
    if (offset < 0) return at + " is negative";
    if (offset % alignment != 0) return at + " is not a multiple of " + std::to_string(alignment);
    if (offset > plan.arena_bytes - sizes[i])
      return at + " ends past the arena of " + std::to_string(plan.arena_bytes) + " bytes";
  }
  // Sorted by first step, a buffer can only meet the ones after it that start by its last step.
  std::vector<size_t> order = indices(buffers.size());
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return buffers[a].first != buffers[b].first ? buffers[a].first < buffers[b].first : a < b;
  });
  for (size_t x = 0; x < order.size(); ++x) {
    const size_t i = order[x];
    if (sizes[i] == 0) continue;
    for (size_t y = x + 1; y < order.size() && buffers[order[y]].first <= buffers[i].last; ++y) {
      const size_t j = order[y];
      if (sizes[j] == 0) continue;
      if (plan.offsets[i] < plan.offsets[j] + sizes[j] && plan.offsets[j] < plan.offsets[i] + sizes[i]) {
        const size_t a = std::min(i, j), b = std::max(i, j);
        return describe(buffers, a) + " at offset " + std::to_string(plan.offsets[a]) + " and " +
               describe(buffers, b) + " at offset " + std::to_string(plan.offsets[b]) +
               " are alive at the same step and share bytes";
      }
    }
  }
  return "";
}

}  // namespace actnn
