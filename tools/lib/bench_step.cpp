// actnn-bench step: the time of one training step (forward, backward) of a
// compiled module next to plain LibTorch autograd on the original module, in
// the same process on the same input. Steps alternate between the two so
// that drift of a shared machine hits both alike; the median is reported.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <iostream>

#include "actnn/actnn.h"
#include "args.h"
#include "bench.h"
#include "bench_models.h"
#include "json.h"

namespace actnn {
namespace tools {

int bench_step(int argc, char** argv) {
  Args args;
  declareModelFlags(args, "L0", "8");
  args.flag("repeat", "5", "timed steps per side; the median is reported")
      .flag("profile", "", "after timing, write one profiled step of the compiled module here (chrome trace)");
  if (!args.parse(argc, argv, 2)) {
    std::cout << "usage: actnn-bench step [flags]\n" << args.help();
    return 0;
  }
  const ModelFlags flags = readModelFlags(args);
  const int64_t repeat = args.integer("repeat");
  if (repeat < 1) throw UsageError("--repeat must be positive");
  torch::jit::Module reference = loadModel(flags.model);
  const Options options = flags.options();
  torch::jit::Module compiled = compile(loadModel(flags.model), options);
  const at::Tensor x = flags.input();

  std::vector<double> fp, ours;
  const std::function<void()> none = [] {};
  trainingStep(reference, x);  // warm-up: first-use allocations, B specialization
  trainingStep(compiled, x);
  for (int64_t i = 0; i < repeat; ++i) {
    fp.push_back(median_seconds([&] { trainingStep(reference, x); }, 1, 0, none));
    ours.push_back(median_seconds([&] { trainingStep(compiled, x); }, 1, 0, none));
  }
  std::sort(fp.begin(), fp.end());
  std::sort(ours.begin(), ours.end());
  const double fp_s = fp[fp.size() / 2], ours_s = ours[ours.size() / 2];
  auto line = [&](const std::string& which, double seconds) {
    return JsonLine()
        .add("model", flags.model)
        .add("batch", flags.batch)
        .add("image", flags.image)
        .add("level", which)
        .add("step_seconds", seconds)
        .add("ratio", seconds / fp_s)
        .add("threads", int64_t(at::get_num_threads()));
  };
  std::cout << line("fp", fp_s) << line(flags.level, ours_s);
  if (!args.str("profile").empty()) {
    torch::autograd::profiler::RecordProfile profile(args.str("profile"));
    trainingStep(compiled, x);
  }
  return 0;
}

}  // namespace tools
}  // namespace actnn
