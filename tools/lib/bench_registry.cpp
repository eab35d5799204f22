#include <algorithm>
#include <chrono>

#include "bench.h"

namespace actnn {
namespace tools {

const std::vector<BenchCommand>& bench_commands() {
  static const std::vector<BenchCommand> commands = {
      {"accuracy", "train on Fashion-MNIST per level from the same start; test accuracy per epoch", bench_accuracy},
      {"gradients", "bias and variance of a level's gradient against L0's over quantization seeds", bench_gradients},
      {"kernels",
       "quantize / dequantize throughput for 1, 2, 4, 8 bits against plain copy bandwidth",
       bench_kernels},
      {"memory", "bytes saved for backward and the allocator peak of a step, against LibTorch autograd",
       bench_memory},
      {"maxbatch", "the largest batch whose measured step peak fits a memory budget, per level (binary search)",
       bench_maxbatch},
      {"peak", "where a step's allocator peak is: the op running then and the live allocations by size", bench_peak},
      {"plan", "L5's arena against the peak of live packed bytes, for every model of the parity test", bench_plan},
      {"soak", "memory over a long run: RSS and allocator live-bytes slopes per step, per level", bench_soak},
      {"step", "one training step of a compiled model against LibTorch autograd, as a time ratio", bench_step},
      {"throughput", "step time per level L0-L5 as ratios to LibTorch autograd, over batch sizes", bench_throughput},
  };
  return commands;
}

double median_seconds(const std::function<void()>& f, int repeat, int warmup,
                      const std::function<void()>& sync) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < repeat; ++i) {
    sync();
    const auto start = std::chrono::steady_clock::now();
    f();
    sync();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace tools
}  // namespace actnn
