// Mixed-precision bit allocation (ActNN's L3): choose a width b_i in
// {1, 2, 4, 8} per unit (a layer's sample, or a whole layer) to minimize the
// quantization variance sum_i C_i / (2^b_i - 1)^2 under a bit budget
// sum_i w_i b_i <= budget. Plain C++, no LibTorch.
#pragma once

#include <cstdint>
#include <vector>

namespace actnn {

// Greedy from 8 bits down: every unit starts at 8; while over budget, the unit
// whose next narrowing (8->4, 4->2, 2->1) adds the least variance per bit saved
// narrows, never below its floor (1 when `floor` is empty); then units widen
// back, most variance removed per bit first, while the budget allows, and a
// single width for all wins when it has less variance. Ties go to the lower
// index, so the result is deterministic. When even the floors exceed the
// budget, every unit gets its floor. Costs must be finite and >= 0,
// weights > 0, floors 1, 2, 4 or 8.
std::vector<int64_t> allocateBits(const std::vector<double>& cost, const std::vector<double>& weight,
                                  double budget, const std::vector<int64_t>& floor = {});

// sum_i cost_i / (2^b_i - 1)^2.
double allocationVariance(const std::vector<double>& cost, const std::vector<int64_t>& bits);

}  // namespace actnn
