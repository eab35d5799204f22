// actnn-bench step: the time of one training step (forward, backward) of a
// compiled module next to plain LibTorch autograd on the original module, in
// the same process on the same input. Steps alternate between the two so
// that drift of a shared machine hits both alike; the median is reported.
#include <ATen/Parallel.h>

#include <algorithm>
#include <iostream>

#include "actnn/actnn.h"
#include "actnn/passes/registry.h"
#include "args.h"
#include "bench.h"
#include "bench_models.h"
#include "json.h"

namespace actnn {
namespace tools {

int bench_step(int argc, char** argv) {
  Args args;
  args.flag("model", "resnet50", "torchvision model name, or a TorchScript archive (.pt)")
      .flag("level", "L0", "compression level of the compiled module (L0..L5)")
      .flag("batch", "8", "samples per step")
      .flag("image", "224", "image height and width")
      .flag("channels", "3", "image channels")
      .flag("repeat", "5", "timed steps per side; the median is reported")
      .flag("threads", "0", "CPU threads (0: LibTorch's default)");
  if (!args.parse(argc, argv, 2)) {
    std::cout << "usage: actnn-bench step [flags]\n" << args.help();
    return 0;
  }
  const int64_t batch = args.integer("batch"), image = args.integer("image"), channels = args.integer("channels");
  const int64_t repeat = args.integer("repeat"), threads = args.integer("threads");
  if (batch < 1 || image < 1 || channels < 1 || repeat < 1)
    throw UsageError("--batch, --image, --channels and --repeat must be positive");
  if (threads > 0) at::set_num_threads(int(threads));
  const std::string model = args.str("model"), level = args.str("level");

  levelPipeline(level);  // an unknown level fails before any model is run
  torch::jit::Module reference = loadModel(model);
  Options options;
  options.level = level;
  torch::jit::Module compiled = compile(loadModel(model), options);
  at::manual_seed(0);
  const at::Tensor x = at::randn({batch, channels, image, image});

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
        .add("model", model)
        .add("batch", batch)
        .add("image", image)
        .add("level", which)
        .add("step_seconds", seconds)
        .add("ratio", seconds / fp_s)
        .add("threads", int64_t(at::get_num_threads()));
  };
  std::cout << line("fp", fp_s) << line(level, ours_s);
  return 0;
}

}  // namespace tools
}  // namespace actnn
