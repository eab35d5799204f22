#include "actnn/runtime/bit_allocation.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <queue>
#include <tuple>

namespace actnn {
namespace {

double levels(int64_t b) { return double((int64_t(1) << b) - 1); }

double noise(int64_t b) { return 1.0 / (levels(b) * levels(b)); }

}  // namespace

std::vector<int64_t> allocateBits(const std::vector<double>& cost, const std::vector<double>& weight,
                                  double budget, const std::vector<int64_t>& floor) {
  TORCH_CHECK(cost.size() == weight.size() && (floor.empty() || floor.size() == cost.size()), "allocateBits: ",
              cost.size(), " costs, ", weight.size(), " weights, ", floor.size(), " floors");
  const size_t n = cost.size();
  std::vector<int64_t> bits(n, 8);
  double used = 0;
  for (size_t i = 0; i < n; ++i) {
    TORCH_CHECK(std::isfinite(cost[i]) && cost[i] >= 0, "allocateBits: cost ", i, " is ", cost[i]);
    TORCH_CHECK(std::isfinite(weight[i]) && weight[i] > 0, "allocateBits: weight ", i, " is ", weight[i]);
    TORCH_CHECK(floor.empty() || floor[i] == 1 || floor[i] == 2 || floor[i] == 4 || floor[i] == 8,
                "allocateBits: floor ", i, " is ", floor[i]);
    used += 8 * weight[i];
  }
  // (added variance per bit saved, unit); the smallest on top, then the
  // lowest index.
  using Step = std::tuple<double, size_t>;
  std::priority_queue<Step, std::vector<Step>, std::greater<Step>> heap;
  auto push = [&](size_t i) {
    const int64_t b = bits[i];
    if (b <= (floor.empty() ? 1 : floor[i])) return;
    const int64_t next = b / 2;
    heap.emplace(cost[i] * (noise(next) - noise(b)) / (weight[i] * double(b - next)), i);
  };
  for (size_t i = 0; i < n; ++i) push(i);
  while (used > budget && !heap.empty()) {
    const size_t i = std::get<1>(heap.top());
    heap.pop();
    const int64_t next = bits[i] / 2;
    used -= weight[i] * double(bits[i] - next);
    bits[i] = next;
    push(i);
  }
  // The last narrowing may save far more than was still needed, leaving
  // earlier ones unnecessary: widen back, largest variance removed per bit
  // first, whatever still fits. The budget left only shrinks, so a widening
  // that does not fit now never will.
  std::priority_queue<Step, std::vector<Step>, std::greater<Step>> widen;
  auto pushWiden = [&](size_t i) {
    const int64_t b = bits[i];
    if (b < 8) widen.emplace(-cost[i] * (noise(b) - noise(2 * b)) / (weight[i] * double(b)), i);
  };
  for (size_t i = 0; i < n; ++i) pushWiden(i);
  while (!widen.empty()) {
    const size_t i = std::get<1>(widen.top());
    widen.pop();
    const double extra = weight[i] * double(bits[i]);
    if (used + extra > budget) continue;
    used += extra;
    bits[i] *= 2;
    pushWiden(i);
  }
  // Greedy steps are coarse (a unit saves 4, 2 or 1 bits at once), so the
  // result can still lose to one width for all: then that width is returned.
  double total = 0;
  int64_t narrowest = 1;
  for (size_t i = 0; i < n; ++i) {
    total += weight[i];
    if (!floor.empty()) narrowest = std::max(narrowest, floor[i]);
  }
  for (int64_t u = 8; u >= narrowest; u /= 2) {
    if (double(u) * total > budget) continue;
    const std::vector<int64_t> uniform(n, u);
    if (allocationVariance(cost, uniform) < allocationVariance(cost, bits)) bits = uniform;
    break;
  }
  return bits;
}

double allocationVariance(const std::vector<double>& cost, const std::vector<int64_t>& bits) {
  double v = 0;
  for (size_t i = 0; i < cost.size(); ++i) v += cost[i] * noise(bits[i]);
  return v;
}

}  // namespace actnn
