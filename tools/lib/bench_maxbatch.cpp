// actnn-bench maxbatch: the largest batch whose training step fits a memory
// budget, found with real steps. A batch fits when the bytes the step needs
// on the device — the module's parameters and buffers, the input batch and
// the allocator's measured peak during one step (after a warm-up step, which
// also lets L5 plan its arena) — stay within --budget. Swapped-out bytes
// (L4, L5) live in host memory and are reported apart (host_peak_bytes).
//
// Search: two small probes give the peak's slope per sample, whose
// prediction is then bracketed and bisected with real steps down to a
// single sample, so the answer is always a measured step that fits next to
// one (batch + 1) that does not.
#include <ATen/ATen.h>

#include <cmath>
#include <iostream>
#include <map>
#include <sstream>

#include <ATen/Parallel.h>

#include "actnn/actnn.h"
#include "actnn/passes/registry.h"
#include "actnn/runtime/swap.h"
#include "args.h"
#include "bench.h"
#include "bench_models.h"
#include "json.h"

namespace actnn {
namespace tools {
namespace {

// "1073741824", "1GiB", "768MiB", "512KiB"
int64_t parseBytes(const std::string& text) {
  static const std::map<std::string, int64_t> units = {{"", 1}, {"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}};
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    throw UsageError("--budget expects bytes (e.g. 1073741824 or 1GiB), got '" + text + "'");
  }
  auto unit = units.find(text.substr(used));
  if (unit == units.end() || !(value > 0))
    throw UsageError("--budget expects bytes (e.g. 1073741824 or 1GiB), got '" + text + "'");
  return int64_t(value * double(unit->second));
}

struct Probe {
  int64_t batch = 0, device_bytes = 0, host_bytes = 0;
  bool fits = false;
};

}  // namespace

int bench_maxbatch(int argc, char** argv) {
  Args args;
  args.flag("model", "resnet50", "torchvision model name, or a TorchScript archive (.pt)")
      .flag("image", "64", "image height and width")
      .flag("budget", "1GiB", "device memory for one step: bytes, or a number with KiB / MiB / GiB")
      .flag("levels", "fp,L3,L4,L5", "comma-separated: fp (LibTorch autograd) and levels L0..L5")
      .flag("max-batch", "100000", "give up above this batch")
      .flag("channels", "3", "image channels")
      .flag("threads", "0", "CPU threads (0: LibTorch's default)");
  if (!args.parse(argc, argv, 2)) {
    std::cout << "usage: actnn-bench maxbatch [flags]\n" << args.help();
    return 0;
  }
  const std::string model = args.str("model");
  const int64_t image = scriptedImageSize(model, args.integer("image"));
  const int64_t budget = parseBytes(args.str("budget"));
  const int64_t limit = args.integer("max-batch");
  if (image < 1 || limit < 1) throw UsageError("--image and --max-batch must be positive");
  setThreads(args.integer("threads"));
  const int64_t channels = args.integer("channels");
  if (channels < 1) throw UsageError("--channels must be positive");
  const std::vector<std::string> levels = splitList(args.str("levels"));
  checkLevels(levels, true);  // an unknown level fails before any search

  int64_t fp_batch = 0;
  for (const auto& level : levels) {
    torch::jit::Module m = modelAtLevel(model, level);
    const int64_t fixed = stateBytes(m);
    std::map<int64_t, Probe> seen;
    auto probe = [&](int64_t b) -> const Probe& {
      auto it = seen.find(b);
      if (it != seen.end()) return it->second;
      at::manual_seed(0);
      const at::Tensor x = at::randn({b, channels, image, image});
      resetSwapHostPeak();
      const StepMemory s = measureStep(m, x);
      Probe p;
      p.batch = b;
      p.device_bytes = fixed + int64_t(x.nbytes()) + s.peak_bytes;
      p.host_bytes = swapHostPeakBytes();
      p.fits = p.device_bytes <= budget;
      std::cerr << "maxbatch " << model << " " << level << ": batch " << b << " needs " << p.device_bytes / 1048576
                << " MiB (" << (p.fits ? "fits" : "does not fit") << ")\n";
      return seen.emplace(b, p).first->second;
    };
    int64_t lo = 0, hi = limit + 1;  // lo fits (0: nothing does), hi does not
    // lo < hi always; a probe that contradicts them (a batch that fits above
    // one that did not) is reported and not used.
    bool monotonic = true;
    auto note = [&](const Probe& p) {
      if (p.fits ? p.batch >= hi : p.batch <= lo) {
        std::cerr << "maxbatch " << model << " " << level << ": batch " << p.batch
                  << (p.fits ? " fits above a batch that did not" : " does not fit below a batch that did")
                  << "; the step's peak is not monotonic in the batch here\n";
        monotonic = false;
        return;
      }
      if (p.fits) lo = p.batch;
      else hi = p.batch;
    };
    note(probe(1));
    if (lo == 1 && limit > 1) {
      const Probe& a = probe(std::min<int64_t>(8, limit));
      note(a);
      const Probe& b = probe(std::min<int64_t>(16, limit));
      note(b);
      const double slope = b.batch > a.batch ? double(b.device_bytes - a.device_bytes) / double(b.batch - a.batch) : 0;
      int64_t guess = slope > 0 ? int64_t(double(budget - a.device_bytes) / slope) + a.batch : 32;
      guess = std::min(std::max<int64_t>(guess, 2), limit);
      // Bracket the prediction within a few percent, then bisect.
      if (guess > lo && guess < hi) note(probe(guess));
      const bool guess_fits = guess <= lo;
      for (int64_t step = std::max<int64_t>(1, guess / 25); hi - lo > step; step *= 2) {
        const int64_t b = guess_fits ? lo + step : hi - step;
        if (b > limit) {
          note(probe(limit));
          break;
        }
        const Probe& p = probe(b);
        note(p);
        if (p.fits != guess_fits) break;
      }
      while (hi - lo > 1) note(probe(lo + (hi - lo) / 2));
    }
    if (level == "fp") fp_batch = lo;
    JsonLine line;
    line.add("model", model)
        .add("image", image)
        .add("budget_bytes", budget)
        .add("level", level)
        .add("max_batch", lo)
        .add("device_bytes", lo > 0 ? seen.at(lo).device_bytes : int64_t(0))
        .add("host_peak_bytes", lo > 0 ? seen.at(lo).host_bytes : int64_t(0))
        .add("state_bytes", fixed)
        .add("probes", int64_t(seen.size()))
        .add("monotonic", monotonic)
        .add("threads", int64_t(at::get_num_threads()));
    if (fp_batch > 0) line.add("ratio_to_fp", double(lo) / double(fp_batch));
    std::cout << line << std::flush;
  }
  return 0;
}

}  // namespace tools
}  // namespace actnn
