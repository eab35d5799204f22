// actnn-bench throughput: the step time of every level next to plain
// LibTorch autograd on the same model, in the same process, over one or more
// batch sizes. Each level is its own compiled copy of the model; after a
// warm-up step each (two for L5, whose first step of a shape measures the
// arena), timed steps go round the levels in turn so that drift of a shared
// machine hits all alike, and the median is reported. With --budget, each
// level's step is also measured on the allocator (as in maxbatch: state +
// input + step peak) and marked "oom" when it would not fit: the
// out-of-memory points of the reference's batch-size figure. Next to the
// ratio of medians, "paired_ratio" (min / median / max) is taken round by
// round against that round's LibTorch step.
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <sstream>

#include "actnn/actnn.h"
#include "args.h"
#include "bench.h"
#include "bench_models.h"
#include "json.h"

namespace actnn {
namespace tools {
namespace {

double stepSeconds(torch::jit::Module& m, const at::Tensor& x) {
  const auto start = std::chrono::steady_clock::now();
  trainingStep(m, x);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int bench_throughput(int argc, char** argv) {
  Args args;
  args.flag("model", "resnet50", "torchvision model name, or a TorchScript archive (.pt)")
      .flag("batch", "32", "comma-separated batch sizes")
      .flag("image", "224", "image height and width")
      .flag("levels", "fp,L0,L1,L2,L3,L4,L5", "comma-separated: fp (LibTorch autograd) and levels L0..L5")
      .flag("repeat", "3", "timed steps per level and batch; the median is reported")
      .flag("budget", "0", "bytes; when > 0, mark steps whose measured need exceeds it as oom")
      .flag("channels", "3", "image channels")
      .flag("threads", "0", "CPU threads (0: LibTorch's default)");
  if (!args.parse(argc, argv, 2)) {
    std::cout << "usage: actnn-bench throughput [flags]\n" << args.help();
    return 0;
  }
  const std::string model = args.str("model");
  const int64_t image = scriptedImageSize(model, args.integer("image"));
  const int64_t repeat = args.integer("repeat"), budget = args.integer("budget");
  if (image < 1 || repeat < 1 || budget < 0) throw UsageError("--image and --repeat must be positive, --budget >= 0");
  setThreads(args.integer("threads"));
  const int64_t channels = args.integer("channels");
  if (channels < 1) throw UsageError("--channels must be positive");
  const auto levels = splitList(args.str("levels"));
  if (std::find(levels.begin(), levels.end(), "fp") == levels.end())
    throw UsageError("--levels must include fp: ratios are to LibTorch autograd");
  std::vector<int64_t> batches;
  for (const auto& text : splitList(args.str("batch"))) {
    size_t used = 0;
    int64_t batch = 0;
    try {
      batch = std::stoll(text, &used);
    } catch (const std::exception&) {
    }
    if (batch < 1 || used != text.size()) throw UsageError("--batch expects positive integers, got '" + text + "'");
    batches.push_back(batch);
  }
  std::vector<torch::jit::Module> modules;
  for (const auto& level : levels) {
    modules.push_back(modelAtLevel(model, level));  // throws naming an unknown level
  }
  for (int64_t batch : batches) {
    at::manual_seed(0);
    const at::Tensor x = at::randn({batch, channels, image, image});
    std::vector<int64_t> need(levels.size(), 0);
    for (size_t i = 0; i < levels.size(); ++i) {
      if (budget > 0) {
        need[i] = stateBytes(modules[i]) + int64_t(x.nbytes()) + measureStep(modules[i], x).peak_bytes;
      } else {
        trainingStep(modules[i], x);
        trainingStep(modules[i], x);
      }
    }
    std::vector<std::vector<double>> times(levels.size());
    for (int64_t r = 0; r < repeat; ++r)
      for (size_t i = 0; i < levels.size(); ++i) times[i].push_back(stepSeconds(modules[i], x));
    const size_t fp = size_t(std::find(levels.begin(), levels.end(), "fp") - levels.begin());
    // Per round, each level's step over the fp step of the same round: on a
    // shared machine whose speed drifts between rounds, their median and range
    // show how far the ratio of medians can be trusted.
    std::vector<std::vector<double>> paired(levels.size());
    for (size_t i = 0; i < levels.size(); ++i) {
      for (int64_t r = 0; r < repeat; ++r) paired[i].push_back(times[i][size_t(r)] / times[fp][size_t(r)]);
      std::sort(paired[i].begin(), paired[i].end());
    }
    std::vector<double> median;
    for (auto& t : times) {
      std::sort(t.begin(), t.end());
      median.push_back(t[t.size() / 2]);
    }
    for (size_t i = 0; i < levels.size(); ++i) {
      JsonLine line;
      line.add("model", model)
          .add("batch", batch)
          .add("image", image)
          .add("level", levels[i])
          .add("step_seconds", median[i])
          .add("ratio", median[i] / median[fp])
          .add("paired_ratio", paired[i][paired[i].size() / 2])
          .add("paired_ratio_min", paired[i].front())
          .add("paired_ratio_max", paired[i].back())
          .add("images_per_second", double(batch) / median[i])
          .add("threads", int64_t(at::get_num_threads()));
      if (budget > 0) line.add("device_bytes", need[i]).add("budget_bytes", budget).add("oom", need[i] > budget);
      std::cout << line << std::flush;
    }
  }
  return 0;
}

}  // namespace tools
}  // namespace actnn
