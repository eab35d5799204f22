#include "actnn/runtime/arena.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "actnn/runtime/compression.h"
#include "actnn/runtime/swap.h"

namespace actnn {
Arena::Arena(int64_t align, std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>> list)
    : alignment(align) {
  TORCH_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0, "actnn.Arena: alignment must be a power of two, got ",
              alignment);
  for (auto& [name, first, last, source] : list) {
    TORCH_CHECK(first <= last, "actnn.Arena: slot '", name, "' ends (", last, ") before it starts (", first, ")");
    TORCH_CHECK(source < int64_t(slots.size()), "actnn.Arena: slot '", name, "' copies slot ", source,
                ", which does not come before it");
    Slot s;
    s.name = std::move(name);
    s.first = first;
    s.last = last;
    s.source = source;
    slots.push_back(std::move(s));
  }
}

bool Arena::allMeasured() const {
  for (const auto& s : slots)
    if (s.source < 0 && !s.measured) return false;  // swap_in slots take their source's size
  return true;
}

Arena::Slot& Arena::slot(int64_t k) {
  TORCH_CHECK(k >= 0 && k < int64_t(slots.size()), "actnn: arena slot ", k, " does not exist (", slots.size(),
              " slots); the module and its arena disagree");
  return slots[k];
}

c10::intrusive_ptr<Arena> Arena::beginStep(const std::vector<int64_t>& key, c10::Device device,
                                           CompressionState* state) {
  auto step = c10::make_intrusive<Arena>();
  std::lock_guard<std::mutex> lock(mutex_);
  step->alignment = alignment;
  step->slots = slots;
  step->key_ = key;
  step->parent_ = c10::intrusive_ptr<Arena>::unsafe_reclaim_from_nonowning(this);
  if (stale_ || key != key_ || !allMeasured()) {
    // This step measures (its producers allocate as usual and record).
    for (auto& s : step->slots) s.measured = false;
    ++measured_steps;
    return step;
  }
  step->planSlots(device, state);
  ++planned_steps;
  return step;
}

void Arena::planSlots(c10::Device device, CompressionState* state) {
  std::vector<PlanBuffer> buffers;
  planned_bytes = 0;
  for (auto& s : slots) {
    const Slot& sized = s.source >= 0 ? slots[s.source] : s;
    int64_t bytes = sized.bytes;
    if (sized.site >= 0 && state) {
      // A mixed-precision site: the most its budget can grant this step.
      std::lock_guard<std::mutex> state_lock(state->mutex);
      const auto& site = state->sites.at(sized.site);
      const double width = site.bits != 0 ? double(site.bits) : std::max<double>(site.budget, double(site.floor));
      const int64_t sample_bits = std::min<int64_t>(int64_t(std::floor(width * double(sized.samples) + 1e-9)),
                                                    8 * sized.samples);
      bytes = packedSliceBytes(sample_bits * sized.bytes_per_bit, sized.meta_bytes, alignment);
    }
    s.planned = bytes;
    s.used = 0;
    planned_bytes += bytes;
    buffers.push_back({bytes, s.first, s.last});
  }
  plan = planArena(buffers, alignment);
  for (size_t k = 0; k < slots.size(); ++k) slots[k].offset = plan.offsets[k];
  buffer_ = at::empty({std::max<int64_t>(plan.arena_bytes, 1)}, at::TensorOptions().dtype(at::kByte).device(device));
  planned_ = true;
}

void Arena::endStep() {
  c10::intrusive_ptr<Arena> parent;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (planned_) {
      used_bytes = 0;
      for (const auto& s : slots) used_bytes += s.used;
    }
    buffer_ = at::Tensor();  // packed values still alive keep their slices
    parent = std::move(parent_);
  }
  if (!parent) return;
  std::lock_guard<std::mutex> lock(parent->mutex_);
  parent->overflows += overflows;
  if (overflows > 0) parent->stale_ = true;
  if (planned_) {
    // The figures of the last planned step.
    parent->plan = plan;
    parent->planned_bytes = planned_bytes;
    parent->used_bytes = used_bytes;
    for (size_t k = 0; k < slots.size(); ++k) {
      parent->slots[k].planned = slots[k].planned;
      parent->slots[k].offset = slots[k].offset;
      parent->slots[k].used = slots[k].used;
    }
    return;
  }
  if (!allMeasured()) return;  // an incomplete step (no backward, an error): measure again
  // A complete measuring step: the next step with this key is planned.
  for (size_t k = 0; k < slots.size(); ++k) {
    const Slot& s = slots[k];
    Slot& p = parent->slots[k];
    p.measured = s.measured;
    p.bytes = s.bytes;
    p.site = s.site;
    p.samples = s.samples;
    p.bytes_per_bit = s.bytes_per_bit;
    p.meta_bytes = s.meta_bytes;
  }
  parent->key_ = key_;
  parent->stale_ = overflows > 0;
}

at::Tensor Arena::acquire(int64_t k, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  Slot& s = slot(k);
  if (!planned_) return at::Tensor();
  if (bytes > s.planned) {
    // Sizes changed under the same input shape: this value allocates as
    // usual and the next step measures again.
    ++overflows;
    return at::Tensor();
  }
  s.used = bytes;
  // Copies to the host started earlier may still be reading this range.
  if (s.source < 0 && buffer_.device().type() != c10::DeviceType::CPU)
    swapBackend(buffer_.device().type()).fenceHostCopies(buffer_.device());
  return buffer_.narrow(0, s.offset, bytes);
}

void Arena::recordFixed(int64_t k, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  Slot& s = slot(k);
  if (planned_) return;
  s.measured = true;
  s.bytes = alignBytes(bytes, alignment);
  s.site = -1;
}

void Arena::recordQuantized(int64_t k, int64_t site, int64_t samples, int64_t bytes_per_bit, int64_t meta_bytes,
                            int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  Slot& s = slot(k);
  if (planned_) return;
  s.measured = true;
  s.bytes = alignBytes(bytes, alignment);
  s.site = site;
  s.samples = samples;
  s.bytes_per_bit = bytes_per_bit;
  s.meta_bytes = meta_bytes;
}

std::vector<PlanBuffer> Arena::lastBuffers() const {
  std::vector<PlanBuffer> out;
  for (const auto& s : slots) out.push_back({s.planned, s.first, s.last});
  return out;
}

Arena::Pickled Arena::pickle() const {
  std::vector<std::string> names;
  std::vector<int64_t> first, last, source;
  for (const auto& s : slots) {
    names.push_back(s.name);
    first.push_back(s.first);
    last.push_back(s.last);
    source.push_back(s.source);
  }
  return {alignment, names, first, last, source};
}

c10::intrusive_ptr<Arena> Arena::unpickle(Pickled p) {
  auto& [align, names, first, last, source] = p;
  TORCH_CHECK(names.size() == first.size() && names.size() == last.size() && names.size() == source.size(),
              "actnn: corrupted Arena (", names.size(), " names, ", first.size(), " starts, ", last.size(),
              " ends, ", source.size(), " sources)");
  std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>> list;
  for (size_t i = 0; i < names.size(); ++i) list.emplace_back(names[i], first[i], last[i], source[i]);
  return c10::make_intrusive<Arena>(align, std::move(list));
}

}  // namespace actnn
