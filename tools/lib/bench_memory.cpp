// actnn-bench memory: what a training step holds, measured on the CPU
// allocator or the CUDA caching allocator (MemoryTracker), for LibTorch autograd on the original module
// ("fp") and for the compiled module, in the same process on the same input.
//  - saved_bytes: live bytes after forward minus before, minus the output:
//    what the step keeps for backward (the reference's method);
//  - peak_bytes: the largest live bytes during forward and backward above the
//    bytes live before the step (parameters and the input excluded);
//  - ratio: fp's saved_bytes / this level's.
// Each side runs one warm-up step first (first-use allocations, backward
// specialization, and at L3 the bit allocator's first statistics).
#include <torch/csrc/autograd/autograd.h>

#include <torch/cuda.h>

#include <iostream>

#include "actnn/actnn.h"
#include "args.h"
#include "bench.h"
#include "bench_models.h"
#include "json.h"
#include "memory_tracker.h"

namespace actnn {
namespace tools {

StepMemory measureStep(torch::jit::Module& module, const at::Tensor& input) {
  trainingStep(module, input);  // warm-up
  dropGrads(module);
  StepMemory m;
  MemoryTracker tracker(input.device().type());
  at::Tensor out = module.forward({input}).toTensor();
  m.saved_bytes = tracker.live() - int64_t(out.nbytes());
  at::Tensor loss = out.sum();
  out = at::Tensor();
  loss.backward();
  loss = at::Tensor();
  // Gradients of the parameters stay (an optimizer needs them); they count
  // towards the peak like any other allocation of the step.
  m.peak_bytes = tracker.peak();
  return m;
}

int bench_memory(int argc, char** argv) {
  Args args;
  declareModelFlags(args, "L3", "32");
  args.flag("device", "cpu", "cpu or cuda (the CUDA caching allocator's reports)");
  if (!args.parse(argc, argv, 2)) {
    std::cout << "usage: actnn-bench memory [flags]\n" << args.help();
    return 0;
  }
  const ModelFlags flags = readModelFlags(args);
  const std::string& model = flags.model;
  const std::string device = args.str("device");
  if (device != "cpu" && device != "cuda") throw UsageError("--device must be cpu or cuda, got '" + device + "'");
  if (device == "cuda" && !torch::cuda::is_available()) throw UsageError("--device=cuda: no CUDA device in this process");
  const c10::Device where(device == "cuda" ? c10::DeviceType::CUDA : c10::DeviceType::CPU);
  const Options options = flags.options();
  const at::Tensor x = flags.input().to(where);
  StepMemory fp, ours;
  {
    torch::jit::Module reference = loadModel(model);
    reference.to(where);
    fp = measureStep(reference, x);
  }
  {
    torch::jit::Module original = loadModel(model);
    original.to(where);  // before compiling: the compiled module shares its tensors
    torch::jit::Module compiled = compile(original, options);
    ours = measureStep(compiled, x);
  }
  auto line = [&](const std::string& which, const StepMemory& m) {
    return JsonLine()
        .add("model", model)
        .add("batch", flags.batch)
        .add("image", flags.image)
        .add("level", which)
        .add("device", device)
        .add("saved_bytes", m.saved_bytes)
        .add("peak_bytes", m.peak_bytes)
        .add("ratio", double(fp.saved_bytes) / double(std::max<int64_t>(m.saved_bytes, 1)))
        .add("peak_ratio", double(fp.peak_bytes) / double(std::max<int64_t>(m.peak_bytes, 1)));
  };
  std::cout << line("fp", fp) << line(flags.level, ours);
  return 0;
}

}  // namespace tools
}  // namespace actnn
