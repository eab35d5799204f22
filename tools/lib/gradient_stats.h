// Gradient quality of a compiled level against the exact (L0) gradient: over
// many backward passes that differ only in the quantization seed, the bias
// and the single-pass variance of every parameter's gradient, and how the
// error of the mean of k passes falls with k. actnn-bench gradients prints
// these; the compiler tests assert on them.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/module.h>

namespace actnn {
namespace tools {

// A parameter's kind, from the module that owns it: "conv", "norm" (batch,
// layer, group norm), "linear" or "other".
std::map<std::string, std::string> parameterKinds(const torch::jit::Module& m);

struct GradientGroup {
  double exact_sq = 0;   // |g|^2 of the exact gradient
  double trace = 0;      // tr(Sigma): the expected |g_k - E g_k|^2 of one pass
  double bias_sq = 0;    // |E g_k - g|^2, estimated as |mean - g|^2 - tr(Sigma) / K (may be < 0)
  // bias_sq over its standard error for an unbiased gradient, sqrt(2 tr(Sigma^2)) / K,
  // with tr(Sigma^2) estimated from 8 blocks of the passes: a z-score, about
  // N(0, 1) when the gradient is unbiased. NaN for fewer than 16 passes.
  double bias_z = 0;
  double relative_bias() const;  // sqrt(max(bias_sq, 0)) / |g|
  double relative_std() const;   // sqrt(tr(Sigma)) / |g|
};

struct GradientStats {
  int64_t passes = 0;
  std::map<std::string, GradientGroup> groups;  // "all" and one per kind
  // (k, root mean square over disjoint blocks of k passes of |mean_k - g| / |g|).
  std::vector<std::pair<int64_t, double>> error_of_mean;
};

// One step's loss: cross entropy against `labels` for a [batch, classes]
// output, else sum(output * labels) (labels then has the output's shape).
at::Tensor stepLoss(const at::Tensor& output, const at::Tensor& labels);
// Targets for `output`: random classes, or a random probe (fixed seed).
at::Tensor stepTargets(const at::Tensor& output, uint64_t seed);

// Parameter gradients of one step of m on (input, targets), keyed by name;
// at::manual_seed(seed) first.
std::map<std::string, at::Tensor> stepGradients(torch::jit::Module& m, const at::Tensor& input,
                                                const at::Tensor& targets, uint64_t seed);

// `passes` steps of `compiled` against `exact` (the L0 gradients of the same
// module and batch, from at::manual_seed(seed)), each from
// at::manual_seed(seed) too: dropout draws the reference's masks every time,
// while the quantization seed still differs from step to step (it mixes the
// generator's seed with the state's step count; runtime/compression.h).
// Error of the mean at k = 1, 4, 16, ... up to `passes`.
GradientStats measureGradients(torch::jit::Module& compiled, const std::map<std::string, at::Tensor>& exact,
                               const std::map<std::string, std::string>& kinds, const at::Tensor& input,
                               const at::Tensor& targets, int64_t passes, uint64_t seed);

}  // namespace tools
}  // namespace actnn
