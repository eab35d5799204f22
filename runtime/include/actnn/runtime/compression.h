// The state a compiled module keeps for compressing its saved activations:
// the TorchScript custom class `torch.classes.actnn.CompressionState`, held
// by the module as the attribute `_actnn_state` and passed by the runtime to
// the forward graph F (whose actnn::compress calls read it) and to the
// backward graph B (whose actnn::observe_grad calls feed it).
//
// Every saved activation the compiler quantizes is a numbered *site*. A site
// has a fixed width (1, 2, 4 or 8 bits) or is mixed precision: then its
// samples get widths that minimize the gradient variance under the budget.
// Mixed precision works at two levels (ActNN's L3):
//  * between steps, across sites: every (site, sample) of the last step is a
//    unit with cost C = |g_n|^2 * kappa * G/4 * sum_g R_g^2 (g_n: gradient
//    into the site's consumers, R_g: the sample's group ranges, kappa: kernel
//    taps / spatial positions, so C / (2^b - 1)^2 bounds the variance the
//    unit adds to the weight gradient), allocated under the budget; a site's
//    average over its samples becomes its budget for the next step;
//  * at each compress call, across the site's samples: costs from the
//    current ranges, under the site's budget.
// Before a site's first backward its budget is the global average. A site
// whose consumer carries the value's noise into the input gradient (batch
// norm, softmax, GELU, ...) has a floor of 2 bits: 1-bit noise there is
// amplified layer after layer (measured: ResNet-18 gradients 7000x off at 1
// bit everywhere, ~1x at 2), while noise in a convolution's or linear's
// input stays in that layer's weight gradient.
//
// Seeds: each step's 64-bit seed mixes the seed of LibTorch's default CPU
// generator with the state's step count (so at::manual_seed /
// torch.manual_seed reproduces a run, and nothing is drawn from the stream
// dropout uses); site k quantizes with Philox key (seed, k).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "actnn/runtime/arena.h"
#include "actnn/runtime/packed.h"

namespace actnn {

struct CompressionState : torch::CustomClassHolder {
  struct Site {
    std::string name;  // what is saved, for messages and reports
    int64_t bits = 0;  // fixed width, or 0 for mixed precision
    int64_t floor = 1;  // mixed: the narrowest width a sample may get
    double budget = 0;  // mixed: average bits per value for the next compress
    bool dither = false;  // packed values decode with subtractive dither (PackedActivation::dither)
    // The last step's statistics (mixed sites).
    int64_t sample_numel = 0;
    std::vector<double> range_cost;  // per sample: kappa * G/4 * sum_g R_g^2
    at::Tensor grad_sq;              // per sample: sum over consumers of |g_n|^2 (on the gradients' device)
    bool observed = false;           // grad_sq belongs to range_cost's step
    std::vector<int64_t> last_bits;  // widths of the last compress
  };

  CompressionState() = default;
  // sites: (name, bits, floor, dither); bits 0 = mixed under `budget_bits`.
  using SiteConfig = std::tuple<std::string, int64_t, int64_t, bool>;
  CompressionState(double budget_bits, int64_t group_size, std::vector<SiteConfig> sites);

  // Called by the runtime before each forward: sets the step's seed and, when
  // a backward has reported gradients since, re-solves the site budgets.
  void beginStep();
  // Quantizes x for `site`. channel_dim: the dim holding channels (1 for
  // conv-like consumers, -1 for linear-like); weight: the consumer's weight,
  // whose trailing dims give the kernel taps. arena (L5): the packed parts are
  // written into `slot` of the step's arena when it is planned.
  c10::intrusive_ptr<PackedActivation> compress(const at::Tensor& x, int64_t site, int64_t channel_dim,
                                                const c10::optional<at::Tensor>& weight,
                                                const c10::intrusive_ptr<Arena>& arena = {}, int64_t slot = -1);
  // Records |g_n|^2 of a gradient flowing into one of the site's consumers.
  void observeGrad(const at::Tensor& grad, int64_t site);

  double budget_bits = 2;
  int64_t group_size = 256;
  std::vector<Site> sites;
  uint64_t seed = 0;
  int64_t steps = 0;
  bool dirty = false;
  std::mutex mutex;

  // Pickled: configuration and site budgets (statistics are gathered again):
  // budget, group size, per site name / width / floor / budget / dither (0, 1),
  // steps.
  using Pickled = std::tuple<double, int64_t, std::vector<std::string>, std::vector<int64_t>,
                             std::vector<int64_t>, std::vector<double>, std::vector<int64_t>, int64_t>;
  Pickled pickle();
  static c10::intrusive_ptr<CompressionState> unpickle(Pickled p);

 private:
  Site& site(int64_t k);
  void solve();  // across sites, from the last step's statistics
};

}  // namespace actnn
