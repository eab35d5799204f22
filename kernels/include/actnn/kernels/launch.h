// Host-side launch planning for the CUDA kernels, kept free of CUDA so that it
// is unit-tested on machines without a GPU.
#pragma once

#include <algorithm>
#include <cstdint>

namespace actnn {
namespace kernels {

// One warp handles one group; blocks hold kWarpsPerBlock warps. The grid is
// capped (grid-stride loops cover the rest), so any number of groups fits,
// including more than a grid dimension can hold.
constexpr int kWarpsPerBlock = 8;
constexpr int64_t kMaxBlocks = 65535;

struct LaunchPlan {
  int64_t blocks;      // grid size (1-D)
  int threads;         // block size
  int64_t iterations;  // grid-stride passes the busiest warp makes
};

inline LaunchPlan plan_items(int64_t items, int items_per_block, int threads) {
  const int64_t needed = std::max<int64_t>(1, (items + items_per_block - 1) / items_per_block);
  const int64_t blocks = std::min<int64_t>(needed, kMaxBlocks);
  return LaunchPlan{blocks, threads, (needed + blocks - 1) / blocks};
}

// Warp-per-group kernels (quantize, dequantize).
inline LaunchPlan plan_groups(int64_t groups) {
  return plan_items(groups, kWarpsPerBlock, 32 * kWarpsPerBlock);
}

// Thread-per-item kernels (masks, indices).
inline LaunchPlan plan_elementwise(int64_t items) { return plan_items(items, 256, 256); }

}  // namespace kernels
}  // namespace actnn
