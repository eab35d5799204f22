// Gradient statistics over quantization seeds (see gradient_stats.h). Sums
// are kept in double per parameter: the mean over K passes, and
// sum_k |g_k - g|^2, from which tr(Sigma) = (sum_k |g_k - g|^2 - K |mean - g|^2)
// / (K - 1) and the bias |mean - g|^2 - tr(Sigma) / K follow without storing
// the passes. tr(Sigma^2), for the bias's standard error, comes from 8 block
// means d_b of K/8 passes each (deviations from the overall mean): for
// independent blocks E[(d_b . d_c)^2] = tr(Sigma^2) / (K/8)^2. Block sums are
// kept in float: a ViT-B has 86 M parameters, and the blocks (8 for the
// z-score, one per k for the error of the mean) dominate the memory.
#include "gradient_stats.h"

#include <cmath>
#include <limits>

namespace actnn {
namespace tools {

std::map<std::string, std::string> parameterKinds(const torch::jit::Module& m) {
  std::map<std::string, std::string> kinds;
  for (const auto& sub : m.named_modules()) {
    const std::string type = sub.value.type()->name() ? sub.value.type()->name()->name() : "";
    std::string kind = "other";
    if (type.find("Conv") != std::string::npos) kind = "conv";
    else if (type.find("Norm") != std::string::npos) kind = "norm";
    else if (type.find("Linear") != std::string::npos) kind = "linear";
    for (const auto& p : sub.value.named_parameters(/*recurse=*/false))
      kinds[sub.name.empty() ? p.name : sub.name + "." + p.name] = kind;
  }
  return kinds;
}

double GradientGroup::relative_bias() const { return std::sqrt(std::max(bias_sq, 0.0) / exact_sq); }
double GradientGroup::relative_std() const { return std::sqrt(trace / exact_sq); }

at::Tensor stepLoss(const at::Tensor& output, const at::Tensor& targets) {
  if (output.dim() == 2 && targets.dim() == 1) return at::cross_entropy_loss(output, targets);
  return (output * targets).sum();
}

at::Tensor stepTargets(const at::Tensor& output, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  if (output.dim() == 2) return at::randint(output.size(1), {output.size(0)}, gen, at::kLong);
  return at::randn(output.sizes(), gen);
}

std::map<std::string, at::Tensor> stepGradients(torch::jit::Module& m, const at::Tensor& input,
                                                const at::Tensor& targets, uint64_t seed) {
  for (const auto& p : m.parameters()) p.mutable_grad() = at::Tensor();
  at::manual_seed(seed);
  stepLoss(m.forward({input}).toTensor(), targets).backward();
  std::map<std::string, at::Tensor> grads;
  for (const auto& p : m.named_parameters())
    if (p.value.grad().defined()) grads[p.name] = p.value.grad().detach().to(at::kDouble);
  return grads;
}

GradientStats measureGradients(torch::jit::Module& compiled, const std::map<std::string, at::Tensor>& exact,
                               const std::map<std::string, std::string>& kinds, const at::Tensor& input,
                               const at::Tensor& targets, int64_t passes, uint64_t seed) {
  TORCH_CHECK(passes >= 2, "measureGradients: needs at least 2 passes, got ", passes);
  std::map<std::string, at::Tensor> sum;        // per parameter, over all passes
  std::map<std::string, double> dev_sq;          // per group: sum_k |g_k - g|^2
  std::vector<int64_t> ks;
  for (int64_t k = 1; k <= passes; k *= 4) ks.push_back(k);
  std::vector<std::map<std::string, at::Tensor>> blocks(ks.size());
  constexpr int64_t kZBlocks = 8;
  const int64_t z_block = passes >= 2 * kZBlocks ? passes / kZBlocks : 0;  // passes per block, 0: no z
  std::vector<std::map<std::string, at::Tensor>> z_sums(kZBlocks);
  std::vector<double> block_err(ks.size(), 0);
  std::vector<int64_t> block_count(ks.size(), 0);
  auto kindOf = [&](const std::string& name) {
    auto it = kinds.find(name);
    return it == kinds.end() ? std::string("other") : it->second;
  };
  for (int64_t pass = 0; pass < passes; ++pass) {
    auto grads = stepGradients(compiled, input, targets, seed);
    for (const auto& [name, g] : exact) {
      auto it = grads.find(name);
      const at::Tensor gk = it == grads.end() ? at::zeros_like(g) : it->second;
      const double d = (gk - g).pow(2).sum().item<double>();
      dev_sq["all"] += d;
      dev_sq[kindOf(name)] += d;
      sum[name] = sum.count(name) ? sum[name].add_(gk) : gk.clone();
      if (z_block > 0 && pass < z_block * kZBlocks) {
        auto& zs = z_sums[size_t(pass / z_block)];
        zs[name] = zs.count(name) ? zs[name].add_(gk) : gk.to(at::kFloat);
      }
      for (size_t i = 0; i < ks.size(); ++i)
        blocks[i][name] = blocks[i].count(name) ? blocks[i][name].add_(gk) : gk.to(at::kFloat);
    }
    for (size_t i = 0; i < ks.size(); ++i) {
      if ((pass + 1) % ks[i] != 0) continue;
      double err = 0;
      for (const auto& [name, g] : exact) err += (blocks[i][name] / double(ks[i]) - g).pow(2).sum().item<double>();
      block_err[i] += err;
      block_count[i] += 1;
      blocks[i].clear();
    }
  }
  GradientStats stats;
  stats.passes = passes;
  std::map<std::string, double> mean_err;
  for (const auto& [name, g] : exact) {
    const double e = (sum[name] / double(passes) - g).pow(2).sum().item<double>();
    const double x = g.pow(2).sum().item<double>();
    for (const std::string group : {std::string("all"), kindOf(name)}) {
      mean_err[group] += e;
      stats.groups[group].exact_sq += x;
    }
  }
  for (auto& [group, s] : stats.groups) {
    const double k = double(passes);
    s.trace = (dev_sq[group] - k * mean_err[group]) / (k - 1);
    s.bias_sq = mean_err[group] - s.trace / k;
  }
  // tr(Sigma^2) per group from the block means' pairwise products.
  std::map<std::string, double> trace_sq;
  if (z_block > 0) {
    std::map<std::string, at::Tensor> mean_z;
    for (const auto& [name, g] : exact) {
      at::Tensor m = at::zeros_like(g);  // double
      for (const auto& zs : z_sums) m.add_(zs.at(name));
      mean_z[name] = m / double(z_block * kZBlocks);
    }
    int64_t pairs = 0;
    for (int64_t b = 0; b < kZBlocks; ++b)
      for (int64_t c = b + 1; c < kZBlocks; ++c, ++pairs) {
        std::map<std::string, double> dot;
        for (const auto& [name, g] : exact) {
          const double d = ((z_sums[size_t(b)].at(name) / double(z_block) - mean_z[name]) *
                            (z_sums[size_t(c)].at(name) / double(z_block) - mean_z[name]))
                               .sum()
                               .item<double>();
          dot["all"] += d;
          dot[kindOf(name)] += d;
        }
        for (const auto& [group, d] : dot) trace_sq[group] += d * d;
      }
    for (auto& [group, t] : trace_sq) t = t / double(pairs) * double(z_block) * double(z_block);
  }
  for (auto& [group, s] : stats.groups)
    s.bias_z = z_block > 0 ? s.bias_sq / (std::sqrt(2 * trace_sq[group]) / double(passes))
                           : std::numeric_limits<double>::quiet_NaN();
  const double norm = std::sqrt(stats.groups["all"].exact_sq);
  for (size_t i = 0; i < ks.size(); ++i)
    stats.error_of_mean.push_back({ks[i], std::sqrt(block_err[i] / double(block_count[i])) / norm});
  return stats;
}

}  // namespace tools
}  // namespace actnn
