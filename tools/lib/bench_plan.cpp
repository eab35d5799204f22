// actnn-bench plan: the static memory plan of level L5 for real models. For
// each model, one step measures the packed buffers' sizes and the next is
// planned (runtime/arena.h); the suite prints the arena of that plan against
// its lower bound, the peak of live bytes (no placement can do better), the
// arena each heuristic alone would need, and the slack of mixed precision
// (bytes planned at the budget's bound minus bytes the step wrote).
#include <fstream>
#include <iostream>
#include <sstream>

#include <ATen/Parallel.h>

#include "actnn/actnn.h"
#include "actnn/passes/registry.h"
#include "actnn/runtime/arena.h"
#include "args.h"
#include "bench.h"
#include "bench_models.h"
#include "json.h"

namespace actnn {
namespace tools {

int bench_plan(int argc, char** argv) {
  Args args;
  args.flag("models", parityModels(), "comma-separated models (default: the torchvision models of the parity test)")
      .flag("batch", "8", "samples per step")
      .flag("image", "224", "image height and width (vit_b_16 runs at the size it was scripted for, 64)")
      .flag("channels", "3", "image channels")
      .flag("threads", "0", "CPU threads (0: LibTorch's default)")
      .flag("dump", "", "also write each model's slots (bytes first last, one per line) to DIR/<model>.slots");
  if (!args.parse(argc, argv, 2)) {
    std::cout << "usage: actnn-bench plan [flags]\n" << args.help();
    return 0;
  }
  const int64_t batch = args.integer("batch"), image = args.integer("image");
  if (batch < 1 || image < 1) throw UsageError("--batch and --image must be positive");
  setThreads(args.integer("threads"));
  const int64_t channels = args.integer("channels");
  if (channels < 1) throw UsageError("--channels must be positive");
  int status = 0;
  for (const std::string& model : splitList(args.str("models"))) {
    Options options;
    options.level = "L5";
    torch::jit::Module compiled = compile(loadModel(model), options);
    const int64_t size = scriptedImageSize(model, image);
    at::manual_seed(0);
    const at::Tensor x = at::randn({batch, channels, size, size});
    trainingStep(compiled, x);  // measures the slots' sizes
    trainingStep(compiled, x);  // planned
    const auto arena = compiled.attr("_actnn_arena").toCustomClass<Arena>();
    const auto buffers = arena->lastBuffers();
    const std::string invalid = validateArenaPlan(buffers, arena->plan, arena->alignment);
    if (!invalid.empty() || arena->planned_steps != 1 || arena->overflows != 0) {
      std::cerr << "actnn-bench plan: " << model << ": the plan is wrong: "
                << (invalid.empty() ? "planned steps " + std::to_string(arena->planned_steps) + ", overflows " +
                                          std::to_string(arena->overflows)
                                    : invalid)
                << "\n";
      status = 1;
    }
    if (!args.str("dump").empty()) {
      std::ofstream out(args.str("dump") + "/" + model.substr(model.find_last_of('/') + 1) + ".slots");
      if (!out) throw UsageError("--dump: cannot write in '" + args.str("dump") + "'");
      for (const auto& b : buffers) out << b.bytes << " " << b.first << " " << b.last << "\n";
    }
    const ArenaPlan& plan = arena->plan;
    std::cout << JsonLine()
                     .add("model", model)
                     .add("batch", batch)
                     .add("image", size)
                     .add("level", "L5")
                     .add("slots", int64_t(arena->slots.size()))
                     .add("arena_bytes", plan.arena_bytes)
                     .add("lower_bound_bytes", plan.lower_bound_bytes)
                     .add("ratio", double(plan.arena_bytes) / double(std::max<int64_t>(plan.lower_bound_bytes, 1)))
                     .add("heuristic", plan.heuristic)
                     .add("greedy_by_size_bytes", planGreedyBySize(buffers, arena->alignment).arena_bytes)
                     .add("greedy_by_start_bytes", planGreedyByStart(buffers, arena->alignment).arena_bytes)
                     .add("greedy_by_breadth_bytes", planGreedyByBreadth(buffers, arena->alignment).arena_bytes)
                     .add("greedy_by_breadth_then_start_bytes",
                          planGreedyByBreadthThenStart(buffers, arena->alignment).arena_bytes)
                     .add("greedy_by_breadth_then_end_bytes",
                          planGreedyByBreadthThenEnd(buffers, arena->alignment).arena_bytes)
                     .add("planned_bytes", arena->planned_bytes)
                     .add("used_bytes", arena->used_bytes)
                     .add("slack_bytes", arena->planned_bytes - arena->used_bytes)
                     .add("threads", int64_t(at::get_num_threads()))
              << std::flush;
  }
  return status;
}

}  // namespace tools
}  // namespace actnn
