// actnn-bench gradients: how good a compressed level's gradient is. The exact
// gradient is L0's (equal to LibTorch autograd's) on one fixed batch; each
// level then runs --seeds backward passes on the same batch that differ only
// in the quantization seed (every pass and the reference start from
// --rng-seed, so dropout masks are the reference's). Per level, one JSON line: the bias |E g_k - g| and
// the single-pass standard deviation sqrt(tr Sigma), both relative to |g|,
// over all parameters and per kind (conv, norm, linear, other), and the error
// of the mean of k passes for k = 1, 4, 16, ... next to what an unbiased
// gradient would give, sigma / sqrt(k); bias_z says how many standard errors
// the squared bias is from 0. See gradient_stats.h. Weights that are all
// zeros are filled with small random values first (zero_parameters_filled).
#include <cmath>
#include <iostream>

#include <ATen/Parallel.h>

#include "actnn/actnn.h"
#include "args.h"
#include "bench.h"
#include "bench_models.h"
#include "gradient_stats.h"
#include "json.h"

namespace actnn {
namespace tools {
namespace {

// Weights (rank >= 2) that are all zeros (torchvision's ViT initializes its
// head so) stop every gradient below them; they get N(0, 0.02^2) values
// instead, the same ones in every copy of the model. Zero biases block
// nothing and stay. Returns how many were filled.
int64_t fillZeroParameters(torch::jit::Module& m) {
  at::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(11);
  int64_t filled = 0;
  for (const auto& p : m.named_parameters()) {
    if (!p.value.is_floating_point() || p.value.dim() < 2 || p.value.numel() == 0 || p.value.ne(0).any().item<bool>())
      continue;
    p.value.copy_(at::randn(p.value.sizes(), gen, p.value.options()) * 0.02);
    ++filled;
  }
  return filled;
}

}  // namespace

int bench_gradients(int argc, char** argv) {
  Args args;
  declareModelFlags(args, "L3", "8");
  args.flag("levels", "L2,L3-biased,L3", "comma-separated levels (L1..L5, or L1-biased..L5-biased: without debias-backward)")
      .flag("seeds", "64", "backward passes per level, each with its own quantization seed")
      .flag("rng-seed", "0", "generator seed of every pass and of the reference (dropout masks equal L0's;"
            " quantization differs per pass)");
  if (!args.parse(argc, argv, 2)) {
    std::cout << "usage: actnn-bench gradients [flags]\n" << args.help();
    return 0;
  }
  // --level and --passes of the shared model flags are unused: --levels says
  // what is compiled.
  ModelFlags flags = readModelFlags(args);
  const int64_t passes = args.integer("seeds");
  if (passes < 2) throw UsageError("--seeds must be at least 2");
  std::vector<std::pair<std::string, Options>> levels;
  for (const auto& l : splitList(args.str("levels"))) levels.push_back({l, levelVariant(l)});
  if (levels.empty()) throw UsageError("--levels names no level");
  flags.image = scriptedImageSize(flags.model, flags.image);
  const at::Tensor input = flags.input();

  torch::jit::Module original = loadModel(flags.model);
  const int64_t filled = fillZeroParameters(original);
  const auto kinds = parameterKinds(original);
  Options l0;
  l0.level = "L0";
  torch::jit::Module reference = compile(original, l0);
  at::Tensor targets;
  {
    at::NoGradGuard no_grad;
    original.eval();
    targets = stepTargets(original.forward({input}).toTensor(), 7);
    original.train();
  }
  const uint64_t seed = uint64_t(args.integer("rng-seed"));
  const auto exact = stepGradients(reference, input, targets, seed);

  for (const auto& [name, options] : levels) {
    torch::jit::Module copy = loadModel(flags.model);
    fillZeroParameters(copy);
    torch::jit::Module compiled = compile(copy, options);
    const GradientStats s = measureGradients(compiled, exact, kinds, input, targets, passes, seed);
    JsonLine line;
    line.add("model", flags.model).add("level", name).add("batch", flags.batch).add("image", flags.image);
    line.add("passes", passes).add("zero_parameters_filled", filled);
    for (const auto& [group, g] : s.groups) {
      const std::string prefix = group == "all" ? "" : group + "_";
      line.add(prefix + "bias", g.relative_bias()).add(prefix + "std", g.relative_std());
      line.add(prefix + "bias_z", g.bias_z);
      if (group == "all") line.add("bias_sq", g.bias_sq / g.exact_sq);
    }
    const double sigma = s.groups.at("all").relative_std();
    for (const auto& [k, err] : s.error_of_mean) {
      line.add("err_k" + std::to_string(k), err);
      line.add("unbiased_k" + std::to_string(k), sigma / std::sqrt(double(k)));
    }
    line.add("threads", int64_t(at::get_num_threads()));
    std::cout << line;
  }
  return 0;
}

}  // namespace tools
}  // namespace actnn
