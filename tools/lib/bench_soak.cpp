// actnn-bench soak: does memory grow over a long run? Each level (and "fp",
// LibTorch autograd on the original module) trains --steps steps in turn on
// fresh random batches, with a plain SGD update so that weights, ranges and
// the L3 budgets move as in real training. Every --sample-every steps it
// records the process's resident set (/proc/self/statm) and the bytes alive
// on LibTorch's CPU allocator (MemoryTracker, relative to the level's start);
// after --warmup steps (first-use allocations, run-time specialization, the
// L5 arena's measuring step), the least-squares slope of each against the
// step number is printed, in bytes per step. A leak of one tensor per step
// shows as a live-bytes slope of that tensor's size; RSS also sees what the
// allocator does not (the runtime's own buffers, C++ containers), with the
// noise of malloc's arenas.
#include <ATen/ATen.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>

#include "actnn/actnn.h"
#include "actnn/passes/registry.h"
#include "args.h"
#include "bench.h"
#include "bench_models.h"
#include "json.h"
#include "memory_tracker.h"

namespace actnn {
namespace tools {
namespace {

int64_t residentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * int64_t(sysconf(_SC_PAGESIZE));
}

// Least-squares slope of y against x.
double slope(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = double(x.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sx += x[i];
    sy += y[i];
    sxx += x[i] * x[i];
    sxy += x[i] * y[i];
  }
  const double den = n * sxx - sx * sx;
  return den > 0 ? (n * sxy - sx * sy) / den : 0.0;
}

}  // namespace

int bench_soak(int argc, char** argv) {
  Args args;
  args.flag("model", "resnet18", "torchvision model name, or a TorchScript archive (.pt)")
      .flag("levels", "fp,L0,L3,L5", "comma-separated: fp (LibTorch autograd) and levels L0..L5")
      .flag("batch", "8", "samples per step")
      .flag("image", "32", "image height and width")
      .flag("channels", "3", "image channels")
      .flag("steps", "1000", "training steps per level")
      .flag("warmup", "50", "first steps left out of the slopes")
      .flag("sample-every", "10", "steps between samples")
      .flag("threads", "0", "CPU threads (0: LibTorch's default)");
  if (!args.parse(argc, argv, 2)) {
    std::cout << "usage: actnn-bench soak [flags]\n" << args.help();
    return 0;
  }
  const std::string model = args.str("model");
  const int64_t batch = args.integer("batch"), image = scriptedImageSize(model, args.integer("image")),
                channels = args.integer("channels");
  const int64_t steps = args.integer("steps"), warmup = args.integer("warmup"), every = args.integer("sample-every");
  if (batch < 1 || image < 1 || channels < 1) throw UsageError("--batch, --image and --channels must be positive");
  if (steps < 1 || warmup < 0 || every < 1) throw UsageError("--steps and --sample-every must be positive, --warmup >= 0");
  if (steps - warmup < 2 * every)
    throw UsageError("--steps must leave at least two samples after --warmup (" + std::to_string(2 * every) +
                     " steps)");
  setThreads(args.integer("threads"));
  const auto levels = splitList(args.str("levels"));
  checkLevels(levels, true);  // an unknown level fails before any training
  for (const auto& level : levels) {
    torch::jit::Module m = modelAtLevel(model, level);
    std::vector<double> at_step, rss, live;
    int64_t rss_start = residentBytes();  // again after the warm-up, when there is one
    MemoryTracker tracker;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t step = 1; step <= steps; ++step) {
      trainingStep(m, at::randn({batch, channels, image, image}));
      {
        at::NoGradGuard no_grad;
        for (const auto& p : m.parameters())
          if (p.grad().defined()) p.sub_(p.grad(), 1e-4);
      }
      if (step == warmup) rss_start = residentBytes();
      if (step > warmup && step % every == 0) {
        at_step.push_back(double(step));
        rss.push_back(double(residentBytes()));
        live.push_back(double(tracker.live()));
      }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << JsonLine()
                     .add("model", model)
                     .add("batch", batch)
                     .add("image", image)
                     .add("level", level)
                     .add("steps", steps)
                     .add("rss_start_bytes", rss_start)
                     .add("rss_end_bytes", int64_t(rss.back()))
                     .add("rss_slope_bytes_per_step", slope(at_step, rss))
                     .add("live_end_bytes", int64_t(live.back()))
                     .add("live_slope_bytes_per_step", slope(at_step, live))
                     .add("seconds", seconds)
              << std::flush;
  }
  return 0;
}

}  // namespace tools
}  // namespace actnn
