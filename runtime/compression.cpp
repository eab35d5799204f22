#include "actnn/runtime/compression.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "actnn/runtime/arena.h"
#include "actnn/runtime/bit_allocation.h"
#include "actnn/runtime/ops.h"
#include "checks.h"

namespace actnn {
namespace {

// Per sample: sum over its groups of (max - min)^2, grouped the way quantize
// groups the sample. On the CPU also each group's (min, max) into `ranges`,
// which the quantize kernel then takes instead of finding them again.
std::vector<double> groupRangeSquares(const at::Tensor& x, int64_t group_size, std::vector<float>* ranges) {
  const int64_t n = sampleCount(x.sizes());
  if (x.device().is_cpu()) {
    // One pass with the quantize kernel's min / max.
    const QuantPlan plan = plan_quantize("actnn::compress", x.scalar_type(), x.sizes(), {2}, group_size);
    const at::Tensor c = x.detach().contiguous();
    std::vector<double> out(static_cast<size_t>(n));
    ranges->resize(size_t(2 * plan.geo.num_samples * plan.geo.groups_per_sample));
    kernels::group_range_squares_cpu(c.data_ptr(), plan.elem, plan.geo, out.data(), ranges->data());
    for (double& v : out)
      if (!std::isfinite(v)) v = 1e300;
    return out;
  }
  at::Tensor flat = x.detach().reshape({n, -1}).contiguous();
  const int64_t d = flat.size(1), full = d / group_size;
  at::Tensor sum = at::zeros({n}, flat.options().dtype(at::kDouble));
  if (full > 0) {
    // A view of the whole groups (no copy even when a partial group follows).
    auto mm = at::aminmax(flat.as_strided({n, full, group_size}, {flat.stride(0), group_size, 1}), 2);
    sum += (std::get<1>(mm) - std::get<0>(mm)).to(at::kDouble).square().sum(1);
  }
  if (d > full * group_size) {
    auto mm = at::aminmax(flat.narrow(1, full * group_size, d - full * group_size), 1);
    sum += (std::get<1>(mm) - std::get<0>(mm)).to(at::kDouble).square();
  }
  sum = sum.cpu();
  std::vector<double> out(sum.data_ptr<double>(), sum.data_ptr<double>() + n);
  // A group holding Inf or NaN has no finite range: the most sensitive unit.
  for (double& v : out)
    if (!std::isfinite(v)) v = 1e300;
  return out;
}

// kernel taps / spatial positions: how many weight-gradient terms one value
// of the input enters, per output position.
double kappa(const at::Tensor& x, int64_t channel_dim, const c10::optional<at::Tensor>& weight) {
  double taps = 1;
  if (weight && weight->defined() && weight->dim() > 2) taps = double(weight->numel() / (weight->size(0) * weight->size(1)));
  if (x.dim() < 2) return taps;
  const int64_t per_sample = x.numel() / std::max<int64_t>(x.size(0), 1);
  const int64_t channels = x.size(channel_dim);
  return taps / double(std::max<int64_t>(per_sample / std::max<int64_t>(channels, 1), 1));
}

// A site read only by normalizations: per sample, the mean over the
// normalizer's units (a layer norm's rows, a batch norm's channels) of
// 1 / (variance + eps), the factor that turns the squared ranges of x into
// those of the normalized value x_hat the normalization's backward reads.
std::vector<double> normalizedUnits(const at::Tensor& x, int64_t normalized) {
  const int64_t n = sampleCount(x.sizes());
  std::vector<double> out(size_t(n), 1.0);
  if (x.numel() == 0 || x.dim() < 2) return out;
  const at::Tensor f = x.detach().to(at::kFloat);
  const double eps = CompressionState::kNormalizerEps;
  if (normalized > 0) {
    if (normalized >= x.dim()) return out;  // no sample dim outside the normalized ones
    int64_t d = 1;
    for (int64_t i = x.dim() - normalized; i < x.dim(); ++i) d *= x.size(i);
    const at::Tensor var = at::var(f.reshape({n, -1, d}), at::IntArrayRef{2}, /*unbiased=*/false, /*keepdim=*/false);
    const at::Tensor inv = (var + eps).reciprocal().mean(1);
    const at::Tensor h = inv.to(at::kDouble).cpu().contiguous();
    std::copy(h.data_ptr<double>(), h.data_ptr<double>() + n, out.begin());
  } else {
    std::vector<int64_t> dims{0};
    for (int64_t i = 2; i < x.dim(); ++i) dims.push_back(i);
    const at::Tensor var = at::var(f, at::IntArrayRef(dims), /*unbiased=*/false, /*keepdim=*/false);
    const double inv = (var + eps).reciprocal().mean().item<double>();
    std::fill(out.begin(), out.end(), inv);
  }
  for (double& v : out)
    if (!std::isfinite(v)) v = 1e300;
  return out;
}

// SplitMix64's finalizer: a bijective mix of 64 bits.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

CompressionState::CompressionState(double budget, int64_t group, std::vector<SiteConfig> list)
    : budget_bits(budget), group_size(group) {
  TORCH_CHECK(budget >= 1 && budget <= 8, "actnn: the bit budget must be in [1, 8], got ", budget);
  for (auto& [name, bits, floor, dither, batch_norm, normalized] : list) {
    TORCH_CHECK(bits == 0 || bits == 1 || bits == 2 || bits == 4 || bits == 8, "actnn: site '", name,
                "' has width ", bits, "; widths are 1, 2, 4, 8 or 0 (mixed)");
    TORCH_CHECK(floor == 1 || floor == 2 || floor == 4 || floor == 8, "actnn: site '", name, "' has floor ",
                floor, "; floors are 1, 2, 4 or 8");
    TORCH_CHECK(normalized >= -1, "actnn: site '", name, "' is normalized over ", normalized,
                " dims; -1 (per channel), 0 (not normalized) or a dim count");
    Site s;
    s.name = std::move(name);
    s.bits = bits;
    s.floor = floor;
    s.active_floor = floor;
    s.budget = budget;
    s.dither = dither;
    s.batch_norm = batch_norm;
    s.normalized = normalized;
    sites.push_back(std::move(s));
  }
}

CompressionState::Site& CompressionState::site(int64_t k) {
  TORCH_CHECK(k >= 0 && k < int64_t(sites.size()), "actnn: compression site ", k, " does not exist (",
              sites.size(), " sites); the module and its state disagree");
  return sites[k];
}

int64_t CompressionState::beginStep() {
  // The step's seed comes from the default generator's seed and this state's
  // step count, without drawing from the generator: the module's own random
  // ops (dropout) see the same stream as at L0 and in plain autograd.
  const uint64_t base = at::detail::getDefaultCPUGenerator().current_seed();
  std::lock_guard<std::mutex> lock(mutex);
  ++steps;
  seed = mix64(base ^ mix64(uint64_t(steps) + 0x9e3779b97f4a7c15ULL));
  if (dirty) solve();
  dirty = false;
  return steps;
}

void CompressionState::abandonStep(int64_t step) {
  std::lock_guard<std::mutex> lock(mutex);
  // A forward that threw has compressed some sites (their statistics wait for
  // a backward that will not come; the next forward overwrites them); a
  // backward that threw has observed some consumers' gradients and not
  // others. Neither may reach solve().
  for (auto& s : sites) {
    s.grad_sq = at::Tensor();
    s.observed = false;
  }
  dirty = false;
  if (steps == step) --steps;
}

void CompressionState::solve() {
  std::vector<double> cost, weight;
  std::vector<int64_t> floors;
  std::vector<std::pair<size_t, size_t>> unit;  // (site, sample)
  for (size_t k = 0; k < sites.size(); ++k) {
    const Site& s = sites[k];
    if (s.bits != 0 || !s.observed) continue;
    // The one device-to-host copy of the gradient statistics per step.
    const at::Tensor grad_sq = s.grad_sq.to(at::kCPU).contiguous();
    TORCH_INTERNAL_ASSERT(grad_sq.numel() == int64_t(s.range_cost.size()));
    for (size_t n = 0; n < s.range_cost.size(); ++n) {
      // NaN (0 * inf, a NaN gradient) is the most sensitive unit, like inf.
      const double c = s.range_cost[n] * grad_sq.data_ptr<double>()[n];
      cost.push_back(std::isnan(c) ? 1e300 : std::min(c, 1e300));
      weight.push_back(double(s.sample_numel));
      floors.push_back(s.active_floor);
      unit.emplace_back(k, n);
    }
  }
  if (unit.empty()) return;
  double total = 0;
  for (double w : weight) total += w;
  const auto bits = allocateBits(cost, weight, budget_bits * total, floors);
  std::vector<double> used(sites.size(), 0), held(sites.size(), 0);
  for (size_t i = 0; i < unit.size(); ++i) {
    used[unit[i].first] += double(bits[i]) * weight[i];
    held[unit[i].first] += weight[i];
  }
  for (size_t k = 0; k < sites.size(); ++k)
    if (held[k] > 0) sites[k].budget = used[k] / held[k];
}

c10::intrusive_ptr<PackedActivation> CompressionState::compress(const at::Tensor& x, int64_t k, int64_t channel_dim,
                                                                const c10::optional<at::Tensor>& weight,
                                                                const c10::intrusive_ptr<Arena>& arena, int64_t slot) {
  if (x.scalar_type() == at::kDouble) {
    // The kernels read float32, bf16 and fp16: a float64 activation is
    // quantized from its float32 copy (the rounding to 2-4 bits dwarfs that
    // of the copy) and decoded back to float64.
    auto p = compress(x.to(at::kFloat), k, channel_dim, weight, arena, slot);
    p->restore_dtype = int64_t(at::kDouble);
    return p;
  }
  int64_t width, normalized;
  bool triangular;
  {
    std::lock_guard<std::mutex> lock(mutex);
    const Site& s = site(k);
    TORCH_CHECK(x.is_floating_point(), "actnn::compress: site ", k, " (", s.name, ") holds a ", x.scalar_type(),
                " tensor; only floating-point activations are quantized");
    width = s.bits;
    normalized = s.normalized;
    triangular = s.triangular;
  }
  // A causal attention's probabilities: only the lower triangle is packed
  // (values stands for x from here on; kappa and the normalized units are
  // x's own).
  std::vector<int64_t> triangle;
  at::Tensor values = x;
  if (triangular && strictUpperTriangleIsZero(x)) {
    triangle = x.sizes().vec();
    values = packLowerTriangle(x);
  }
  // Mixed sites: the range statistics are computed outside the lock.
  std::vector<double> range_cost;
  std::vector<float> ranges;  // CPU, mixed: per group (min, max), for the quantize kernel
  if (width == 0) {
    const double scale = kappa(x, channel_dim, weight) * double(group_size) / 4;
    range_cost = groupRangeSquares(values, group_size, &ranges);
    for (double& c : range_cost) c = std::min(c * scale, 1e300);
    if (normalized != 0) {
      const std::vector<double> units = normalizedUnits(x, normalized);
      for (size_t i = 0; i < range_cost.size(); ++i) range_cost[i] = std::min(range_cost[i] * units[i], 1e300);
    }
  }
  std::vector<int64_t> bits;
  uint64_t step_seed;
  bool dither;
  {
    std::lock_guard<std::mutex> lock(mutex);
    Site& s = site(k);
    step_seed = seed;
    dither = s.dither;
    if (width != 0) {
      bits = {width};
    } else {
      const int64_t n = int64_t(range_cost.size());
      s.range_cost = std::move(range_cost);
      s.sample_numel = values.numel() / std::max<int64_t>(n, 1);
      s.grad_sq = at::Tensor();
      s.observed = false;
      // A batch norm over few values per channel: see kSmallCount.
      const bool small_count = s.batch_norm && x.dim() >= 2 && x.size(1) > 0 && x.numel() / x.size(1) < kSmallCount;
      s.active_floor = small_count ? std::max<int64_t>(s.floor, 4) : s.floor;
      bits = allocateBits(s.range_cost, std::vector<double>(n, 1.0), s.budget * double(n),
                          std::vector<int64_t>(n, s.active_floor));
      if (n == 0) bits = {s.active_floor};  // an empty batch: one width for no samples
    }
    s.last_bits = bits;
  }
  auto pack = [&](const c10::optional<at::Tensor>& buffer, int64_t alignment) {
    c10::intrusive_ptr<PackedActivation> p;
    if (ranges.empty()) {
      p = quantize(values, bits, group_size, int64_t(step_seed), k, buffer, alignment);
    } else {
      auto [codes, lo, scale] =
          quantize_groups_cpu_with_ranges(values, bits, group_size, int64_t(step_seed), k, buffer, alignment, ranges);
      p = c10::make_intrusive<PackedActivation>(codes, lo, scale, values.sizes().vec(),
                                                int64_t(values.scalar_type()), bits, group_size);
      p->seed = int64_t(step_seed);
      p->offset = k;
    }
    p->dither = dither;
    p->lower_triangle_of = triangle;
    return p;
  };
  if (!arena) return pack(c10::nullopt, 64);
  const QuantPlan plan = plan_quantize("actnn::compress", values.scalar_type(), values.sizes(), bits, group_size);
  const int64_t meta = plan.geo.num_samples * plan.geo.groups_per_sample * int64_t(c10::elementSize(plan.meta_dtype));
  const int64_t bytes = packedSliceBytes(plan.code_bytes, meta, arena->alignment);
  at::Tensor slice = arena->acquire(slot, bytes);
  auto packed = pack(slice.defined() ? c10::optional<at::Tensor>(slice) : c10::nullopt, arena->alignment);
  if (width == 0)
    arena->recordQuantized(slot, k, plan.geo.num_samples, plan.geo.sample_bytes(1), meta, bytes);
  else
    arena->recordFixed(slot, bytes);
  return packed;
}

void CompressionState::observeGrad(const at::Tensor& grad, int64_t k) {
  if (!grad.defined()) return;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (site(k).bits != 0) return;
  }
  const int64_t n = sampleCount(grad.sizes());
  at::Tensor sq;
  if (grad.device().is_cpu() && (grad.scalar_type() == at::kFloat || grad.scalar_type() == at::kHalf ||
                                 grad.scalar_type() == at::kBFloat16)) {
    // One pass, no converted copy of the gradient.
    const at::Tensor g = grad.detach().contiguous();
    sq = at::empty({n}, g.options().dtype(at::kDouble));
    const QuantPlan plan = plan_quantize("actnn::observe_grad", g.scalar_type(), g.sizes(), {2}, 256);
    kernels::sample_square_norms_cpu(g.data_ptr(), plan.elem, n, n ? g.numel() / n : 0, sq.data_ptr<double>());
  } else {
    // Kept on its device (solve() copies it to the host once per step), in
    // the gradient's precision.
    // at least float precision (a half gradient's norm can
    // exceed half's range).
    const at::ScalarType acc = grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    sq = at::linalg_vector_norm(grad.detach().reshape({n, -1}), 2, at::IntArrayRef{1}, false, acc)
             .to(at::kDouble)
             .square();
  }
  std::lock_guard<std::mutex> lock(mutex);
  Site& s = site(k);
  if (int64_t(s.range_cost.size()) != n) return;  // not the batch this site last saw
  s.grad_sq = s.grad_sq.defined() ? s.grad_sq + sq : sq;
  s.observed = true;
  dirty = true;
}

CompressionState::Pickled CompressionState::pickle() {
  std::lock_guard<std::mutex> lock(mutex);
  std::vector<std::string> names;
  std::vector<int64_t> bits, floors, flags;
  std::vector<double> budgets;
  for (const auto& s : sites) {
    names.push_back(s.name);
    bits.push_back(s.bits);
    floors.push_back(s.floor);
    budgets.push_back(s.budget);
    const int64_t norm = s.normalized == -1 ? 1 : s.normalized == 0 ? 0 : s.normalized + 1;
    flags.push_back((s.dither ? 1 : 0) | (s.batch_norm ? 2 : 0) | (norm << 2) | (s.triangular ? kTriangularFlag : 0));
  }
  return {budget_bits, group_size, names, bits, floors, budgets, flags, steps};
}

c10::intrusive_ptr<CompressionState> CompressionState::unpickle(Pickled p) {
  auto& [budget, group, names, bits, floors, budgets, flags, steps] = p;
  TORCH_CHECK(names.size() == bits.size() && names.size() == floors.size() && names.size() == budgets.size() &&
                  names.size() == flags.size(),
              "actnn: corrupted CompressionState (", names.size(), " names, ", bits.size(), " widths, ",
              floors.size(), " floors, ", budgets.size(), " budgets, ", flags.size(), " site flags)");
  std::vector<SiteConfig> list;
  for (size_t i = 0; i < names.size(); ++i) {
    TORCH_CHECK(flags[i] >= 0 && flags[i] < 2 * kTriangularFlag, "actnn: corrupted CompressionState (site ", i,
                " has flags ", flags[i], "; 1 = dither, 2 = batch norm, 4 to 2^19 = normalized, 2^20 = triangular)");
    const int64_t norm = (flags[i] & (kTriangularFlag - 1)) >> 2;
    list.emplace_back(names[i], bits[i], floors[i], (flags[i] & 1) != 0, (flags[i] & 2) != 0,
                      norm == 1 ? -1 : norm == 0 ? 0 : norm - 1);
  }
  auto state = c10::make_intrusive<CompressionState>(budget, group, std::move(list));
  for (size_t i = 0; i < flags.size(); ++i) state->sites[i].triangular = (flags[i] & kTriangularFlag) != 0;
  for (size_t i = 0; i < budgets.size(); ++i) state->sites[i].budget = budgets[i];
  state->steps = steps;
  return state;
}

CompressionState::Saved CompressionState::save() {
  auto [budget, group, names, bits, floors, budgets, flags, step_count] = pickle();
  std::lock_guard<std::mutex> lock(mutex);
  Statistics stats;
  auto& [dirty_flag, numel, active_floor, observed, range_cost, grad_sq, last_bits] = stats;
  dirty_flag = dirty ? 1 : 0;
  for (const auto& s : sites) {
    numel.push_back(s.sample_numel);
    active_floor.push_back(s.active_floor);
    observed.push_back(s.observed ? 1 : 0);
    range_cost.push_back(s.range_cost);
    std::vector<double> sq;
    if (s.grad_sq.defined()) {
      const at::Tensor host = s.grad_sq.to(at::kCPU, at::kDouble).contiguous();
      sq.assign(host.data_ptr<double>(), host.data_ptr<double>() + host.numel());
    }
    grad_sq.push_back(std::move(sq));
    last_bits.push_back(s.last_bits);
  }
  return {budget, group, names, bits, floors, budgets, flags, step_count, std::move(stats)};
}

c10::intrusive_ptr<CompressionState> CompressionState::load(const c10::IValue& value) {
  TORCH_CHECK(value.isTuple(), "actnn: corrupted CompressionState (its saved state is a ", value.tagKind(),
              ", not a tuple)");
  const std::vector<c10::IValue> fields = value.toTupleRef().elements().vec();
  TORCH_CHECK(fields.size() == 8 || fields.size() == 9, "actnn: corrupted CompressionState (", fields.size(),
              " saved fields; 8 or 9)");
  auto state = unpickle({fields[0].toDouble(), fields[1].toInt(), fields[2].to<std::vector<std::string>>(),
                         fields[3].to<std::vector<int64_t>>(), fields[4].to<std::vector<int64_t>>(),
                         fields[5].to<std::vector<double>>(), fields[6].to<std::vector<int64_t>>(),
                         fields[7].toInt()});
  if (fields.size() == 8) return state;  // an archive from before the statistics were saved
  TORCH_CHECK(fields[8].isTuple() && fields[8].toTupleRef().elements().size() == 7,
              "actnn: corrupted CompressionState (its statistics are not a 7-tuple)");
  // Field by field (IValue::to of a long tuple trips GCC's -Warray-bounds).
  const std::vector<c10::IValue> stats = fields[8].toTupleRef().elements().vec();
  const int64_t dirty_flag = stats[0].toInt();
  const auto numel = stats[1].to<std::vector<int64_t>>(), active_floor = stats[2].to<std::vector<int64_t>>(),
             observed = stats[3].to<std::vector<int64_t>>();
  const auto range_cost = stats[4].to<std::vector<std::vector<double>>>(),
             grad_sq = stats[5].to<std::vector<std::vector<double>>>();
  const auto last_bits = stats[6].to<std::vector<std::vector<int64_t>>>();
  const size_t n = state->sites.size();
  TORCH_CHECK(numel.size() == n && active_floor.size() == n && observed.size() == n && range_cost.size() == n &&
                  grad_sq.size() == n && last_bits.size() == n,
              "actnn: corrupted CompressionState (statistics of ", numel.size(), " sites for ", n, " sites)");
  for (size_t k = 0; k < n; ++k) {
    Site& s = state->sites[k];
    const bool seen = observed[k] != 0;
    TORCH_CHECK(!seen || grad_sq[k].size() == range_cost[k].size(), "actnn: corrupted CompressionState (site ", k,
                " has ", range_cost[k].size(), " sample costs and ", grad_sq[k].size(), " gradient norms)");
    TORCH_CHECK(numel[k] >= 0 && (active_floor[k] == 1 || active_floor[k] == 2 || active_floor[k] == 4 ||
                                  active_floor[k] == 8),
                "actnn: corrupted CompressionState (site ", k, " has ", numel[k], " values a sample, floor ",
                active_floor[k], ")");
    s.sample_numel = numel[k];
    s.active_floor = active_floor[k];
    s.observed = seen;
    s.range_cost = range_cost[k];
    if (seen)
      s.grad_sq = at::tensor(c10::ArrayRef<double>(grad_sq[k]), at::TensorOptions().dtype(at::kDouble));
    s.last_bits = last_bits[k];
  }
  state->dirty = dirty_flag != 0;
  return state;
}

}  // namespace actnn
