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
// A site read by a batch norm that normalizes few values per channel
// (M = numel / channels < kSmallCount, seen at each compress call) has a
// floor of 4 bits. Its noise reaches the input gradient through the
// per-channel mean of g * x_hat, which over M values carries about 1/sqrt(M)
// of |g|, and the relative variances added by batch norms in series multiply.
// Measured on one batch norm (64 channels of different scales and offsets,
// batch 8): the input gradient's relative variance at 2 bits is 1.4/M-3/M
// while a quantization group lies within one channel, but 1.2 at M = 512 and
// 25 at M = 128 once groups span channels (H x W < group size: a channel of
// small scale gets the step of the widest one), and at 4 bits 0.008 and 0.08.
// Measured on efficientnet_v2_l at 64x64, batch 8 (about 240 batch norms at
// M = 32 and 128), one step from the same weights: the parameter gradient's
// norm is 7.6x L0's without this floor (the loss is NaN by step 5), 4.0x
// with it (five finite, decreasing losses). Most of the rest comes from its
// SiLU sites (which hold SiLU's derivative, debias-backward): 1.4x with
// those at 4 bits too (not done: no floor for them; see the README's zoo).
//
// A site read only as the input of batch norms or layer norms (a
// transformer's residual stream before each LayerNorm, a conv output before
// its BatchNorm) is weighed in units of the normalized value x_hat, which is
// what those backwards read: its squared ranges are multiplied, per sample,
// by the mean over the normalizer's units (layer-norm rows, batch-norm
// channels) of 1 / (variance + kNormalizerEps). In absolute units a residual
// stream that has grown large looks sensitive out of all proportion: on the
// 6-layer GPT of tools/studies/gpt_bytes.py it took 4 bits per LayerNorm
// input and the last one 8, paid for with 1-bit linear inputs, and the
// 1000-step training loss ended 7.9% above full precision's; weighed in
// x_hat units, 5.3% (the README's "Training quality").
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
    bool batch_norm = false;  // read by a batch norm: floor 4 below kSmallCount values per channel
    // Read only as the input of normalizations: 0 no; -1 batch norms (per
    // channel); k > 0 layer norms over the last k dims. Costs are then in
    // units of the normalized value (see kNormalizerEps).
    int64_t normalized = 0;
    // A softmax output: when its strict upper triangle (last two dims) is
    // exactly zero, as a causal attention's is, only the lower triangle is
    // packed (packLowerTriangle). Checked per call, only at these sites (the
    // check reads the tensor, and on a GPU waits for it).
    bool triangular = false;
    int64_t active_floor = 1;  // mixed: the floor of the last compress call (floor, or 4 for a small count)
    // The last step's statistics (mixed sites).
    int64_t sample_numel = 0;
    std::vector<double> range_cost;  // per sample: kappa * G/4 * sum_g R_g^2
    at::Tensor grad_sq;              // per sample: sum over consumers of |g_n|^2 (on the gradients' device)
    bool observed = false;           // grad_sq belongs to range_cost's step
    std::vector<int64_t> last_bits;  // widths of the last compress
  };

  CompressionState() = default;
  // A batch norm's input with fewer values per channel than this is quantized
  // to at least 4 bits (see above).
  static constexpr int64_t kSmallCount = 256;

  // The variance floor of the normalized-units cost (LayerNorm's and
  // BatchNorm's default epsilon).
  static constexpr double kNormalizerEps = 1e-5;
  // The pickled flags' bit for Site::triangular.
  static constexpr int64_t kTriangularFlag = int64_t(1) << 20;

  // sites: (name, bits, floor, dither, batch_norm, normalized); bits 0 =
  // mixed under `budget_bits`.
  using SiteConfig = std::tuple<std::string, int64_t, int64_t, bool, bool, int64_t>;
  CompressionState(double budget_bits, int64_t group_size, std::vector<SiteConfig> sites);

  // Called by the runtime before each forward: sets the step's seed and, when
  // a backward has reported gradients since, re-solves the site budgets.
  // Returns the step's number (for abandonStep).
  int64_t beginStep();
  // Called by the runtime when step `step`'s forward or backward threw (out
  // of memory, a failing op): the statistics that step's backward had begun
  // to gather are dropped (none is half counted) and, unless a later step has
  // begun since, its number is given back, so that retrying it draws the
  // same seeds as if the failed attempt had never run.
  void abandonStep(int64_t step);
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

  // Pickled: configuration and site budgets: budget, group size, per site
  // name / width / floor / budget / flags (1: dither, 2: batch_norm, 2^20:
  // triangular, bits 2 to 19: normalized as 0 none, 1 batch norm, k + 1 layer norm over k
  // dims; older archives hold 0 to 3), steps; then the last step's
  // statistics (Statistics), so that a run saved and resumed re-solves the
  // same budgets as one that went on. Archives from before the statistics
  // hold the first eight fields only (unpickle(Pickled)): they load and
  // gather statistics again.
  using Pickled = std::tuple<double, int64_t, std::vector<std::string>, std::vector<int64_t>,
                             std::vector<int64_t>, std::vector<double>, std::vector<int64_t>, int64_t>;
  // dirty; per site: sample_numel, active_floor, observed (0 / 1),
  // range_cost, grad_sq (as host doubles; empty when not observed), last_bits.
  using Statistics = std::tuple<int64_t, std::vector<int64_t>, std::vector<int64_t>, std::vector<int64_t>,
                                std::vector<std::vector<double>>, std::vector<std::vector<double>>,
                                std::vector<std::vector<int64_t>>>;
  using Saved = std::tuple<double, int64_t, std::vector<std::string>, std::vector<int64_t>, std::vector<int64_t>,
                           std::vector<double>, std::vector<int64_t>, int64_t, Statistics>;
  Pickled pickle();
  Saved save();
  // What __setstate__ receives: a Saved tuple, or an older archive's Pickled.
  static c10::intrusive_ptr<CompressionState> load(const c10::IValue& state);
  static c10::intrusive_ptr<CompressionState> unpickle(Pickled p);

 private:
  Site& site(int64_t k);
  void solve();  // across sites, from the last step's statistics
};

}  // namespace actnn
