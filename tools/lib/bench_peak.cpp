// actnn-bench peak: where a training step's CPU allocator peak is. Runs one
// warm-up step, then one measured step of LibTorch autograd on the original
// module (--level=fp) or of the compiled module, and reports the bytes live at
// the peak (above those live before the step), the ATen op stack running when
// the peak was reached (RecordFunction, innermost last, with the shapes of
// their tensor arguments), and the live
// allocations at that moment grouped by size, largest first, and the largest
// ones with the op that allocated each. This is the
// measurement behind decisions about backward's working set: which op holds
// which activation-sized buffers when memory is highest.
#include <ATen/record_function.h>
#include <c10/core/Allocator.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <unordered_map>

#include "actnn/actnn.h"
#include "args.h"
#include "bench.h"
#include "memory_tracker.h"
#include "bench_models.h"
#include "json.h"

namespace actnn {
namespace tools {
namespace {

// The ops running on this thread, innermost last, with their tensor
// arguments' shapes.
thread_local std::vector<std::string> op_stack;

// The op of the program that is allocating: the one called from F or B
// (actnn_forward / actnn_backward), else the innermost; without arguments.
std::string allocatingOp() {
  if (op_stack.empty()) return "(no op)";
  size_t pick = op_stack.size() - 1;
  for (size_t i = 0; i + 1 < op_stack.size(); ++i)
    if (op_stack[i].rfind("actnn_forward", 0) == 0 || op_stack[i].rfind("actnn_backward", 0) == 0) pick = i + 1;
  return op_stack[pick].substr(0, op_stack[pick].find('('));
}

struct PeakProbe : c10::MemoryReportingInfoBase {
  struct Allocation {
    int64_t bytes;
    std::string op;  // the op of F or B (or autograd's) that allocated it
  };
  std::unordered_map<void*, Allocation> live_allocations;
  int64_t live = 0, peak = 0;
  std::vector<std::string> ops_at_peak;
  std::map<int64_t, int64_t, std::greater<int64_t>> sizes_at_peak;  // bytes -> count
  std::vector<Allocation> largest_at_peak;

  void reportMemoryUsage(void* ptr, int64_t delta, MemoryTotal, MemoryTotal, c10::Device where) override {
    if (where.type() != c10::DeviceType::CPU) return;
    if (delta > 0) {
      live_allocations[ptr] = {delta, allocatingOp()};
    } else {
      live_allocations.erase(ptr);
    }
    live += delta;
    if (live <= peak) return;
    peak = live;
    ops_at_peak = op_stack;
    sizes_at_peak.clear();
    largest_at_peak.clear();
    for (const auto& entry : live_allocations) {
      ++sizes_at_peak[entry.second.bytes];
      largest_at_peak.push_back(entry.second);
    }
    std::sort(largest_at_peak.begin(), largest_at_peak.end(),
              [](const Allocation& a, const Allocation& b) { return a.bytes > b.bytes; });
  }
  bool memoryProfilingEnabled() const override { return true; }
};

}  // namespace

int bench_peak(int argc, char** argv) {
  Args args;
  declareModelFlags(args, "L5", "64");
  args.flag("top", "12", "how many allocation sizes to list");
  if (!args.parse(argc, argv, 2)) {
    std::cout << "usage: actnn-bench peak [flags]   (--level=fp: LibTorch autograd)\n" << args.help();
    return 0;
  }
  const bool fp = args.str("level") == "fp";
  ModelFlags flags = readModelFlags(args, /*allow_fp=*/true);
  const int64_t top = args.integer("top");
  torch::jit::Module original = loadModel(flags.model);
  torch::jit::Module module = fp ? original : compile(original, flags.options());
  const at::Tensor x = flags.input();
  trainingStep(module, x);  // warm-up: first-use allocations, L5's measuring step
  dropGrads(module);

  auto probe = std::make_shared<PeakProbe>();
  auto handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(
          [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
            std::string entry = fn.name();
            std::string shapes;
            for (const auto& v : fn.inputs()) {
              if (!v.isTensor() || !v.toTensor().defined()) continue;
              std::string dims;
              for (int64_t d : v.toTensor().sizes()) dims += (dims.empty() ? "" : "x") + std::to_string(d);
              shapes += (shapes.empty() ? "" : ", ") + dims;
            }
            if (!shapes.empty()) entry += "(" + shapes + ")";
            op_stack.push_back(entry);
            return nullptr;
          },
          [](const at::RecordFunction&, at::ObserverContext*) {
            if (!op_stack.empty()) op_stack.pop_back();
          })
          .needsInputs(true)
          .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION, at::RecordScope::TORCHSCRIPT_FUNCTION}));
  {
    c10::DebugInfoGuard guard(c10::DebugInfoKind::PROFILER_STATE, probe);
    trainingStep(module, x);
  }
  at::removeCallback(handle);

  std::string stack;
  for (const auto& op : probe->ops_at_peak) stack += (stack.empty() ? "" : " > ") + op;
  std::string sizes;
  int64_t listed = 0;
  for (const auto& entry : probe->sizes_at_peak) {
    if (listed++ == top) break;
    sizes += (sizes.empty() ? "" : ", ") + std::to_string(entry.second) + "x" + std::to_string(entry.first);
  }
  std::string largest;
  for (int64_t k = 0; k < std::min<int64_t>(top, int64_t(probe->largest_at_peak.size())); ++k) {
    const auto& a = probe->largest_at_peak[k];
    largest += (largest.empty() ? "" : ", ") + std::to_string(a.bytes) + " from " + a.op;
  }
  std::cout << JsonLine()
                   .add("model", flags.model)
                   .add("batch", flags.batch)
                   .add("image", flags.image)
                   .add("level", fp ? std::string("fp") : flags.level)
                   .add("peak_bytes", probe->peak)
                   .add("ops_at_peak", stack)
                   .add("live_at_peak", "[" + sizes + "]")
                   .add("largest_at_peak", "[" + largest + "]");
  return 0;
}

}  // namespace tools
}  // namespace actnn
