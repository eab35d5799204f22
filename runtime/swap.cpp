#include "actnn/runtime/swap.h"

#include <ATen/ATen.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "actnn/runtime/arena.h"
#include "actnn/runtime/packed.h"

namespace actnn {
namespace {

std::atomic<int64_t> host_live{0};
std::atomic<int64_t> host_peak{0};

void countHost(int64_t delta) {
  const int64_t now = host_live.fetch_add(delta) + delta;
  int64_t peak = host_peak.load();
  while (now > peak && !host_peak.compare_exchange_weak(peak, now)) {
  }
}

// CPU: host copies in malloc'd memory (outside LibTorch's allocator, see
// swap.h), copied synchronously.
struct CpuTicket : SwapTicket {
  void wait() override {}
};

struct CpuSwapBackend : SwapBackend {
  at::Tensor toHost(const at::Tensor& t) override {
    const at::Tensor src = t.contiguous();
    const size_t bytes = src.nbytes();
    void* data = std::malloc(std::max<size_t>(bytes, 1));
    TORCH_CHECK(data, "actnn::swap_out: out of host memory (", bytes, " bytes)");
    if (bytes) std::memcpy(data, src.data_ptr(), bytes);
    return at::from_blob(
        data, src.sizes(), [](void* p) { std::free(p); }, src.options());
  }
  std::unique_ptr<SwapTicket> toDevice(const at::Tensor& host, const at::Tensor& dst) override {
    dst.copy_(host);
    return std::make_unique<CpuTicket>();
  }
  void fenceHostCopies(c10::Device) override {}
};

std::array<SwapBackend*, size_t(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>& backends() {
  static CpuSwapBackend cpu;
  static std::array<SwapBackend*, size_t(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)> table = [] {
    std::array<SwapBackend*, size_t(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)> t{};
    t[size_t(c10::DeviceType::CPU)] = &cpu;
    return t;
  }();
  return table;
}

// Where a slice of `bytes` bytes for one device tensor of `like`'s size and
// type comes from: the arena slot's view at `offset`, or a new allocation.
at::Tensor deviceTensorLike(const at::Tensor& host, c10::Device device, const at::Tensor& slice, int64_t offset) {
  if (!slice.defined()) return at::empty(host.sizes(), host.options().device(device));
  const int64_t bytes = int64_t(host.nbytes());
  return slice.narrow(0, offset, bytes).view(host.scalar_type()).view(host.sizes());
}

}  // namespace

void registerSwapBackend(c10::DeviceType type, SwapBackend* backend) { backends()[size_t(type)] = backend; }

SwapBackend& swapBackend(c10::DeviceType type) {
  SwapBackend* b = backends()[size_t(type)];
  TORCH_CHECK(b, "actnn: no swap backend for device type ", type, " (CPU and CUDA have one)");
  return *b;
}

int64_t swapHostBytes() { return host_live.load(); }
int64_t swapHostPeakBytes() { return host_peak.load(); }
void resetSwapHostPeak() { host_peak.store(host_live.load()); }

SwappedValue::~SwappedValue() { releaseHost(); }

void SwappedValue::releaseHost() {
  if (host_bytes) countHost(-host_bytes);
  host_bytes = 0;
}

c10::intrusive_ptr<SwappedValue> swapOut(const c10::IValue& value) {
  auto s = c10::make_intrusive<SwappedValue>();
  if (value.isTensor()) {
    const at::Tensor& t = value.toTensor();
    s->device = t.device();
    at::Tensor host = swapBackend(t.device().type()).toHost(t);
    s->host_bytes = int64_t(host.nbytes());
    s->value = host;
  } else {
    auto p = value.toCustomClass<PackedActivation>();
    s->device = p->codes.device();
    auto& backend = swapBackend(s->device.type());
    auto host = p->withParts(backend.toHost(p->codes), backend.toHost(p->lo), backend.toHost(p->scale));
    s->host_bytes = host->nbytes();
    s->value = c10::IValue(host);
  }
  s->on_host = true;
  countHost(s->host_bytes);
  return s;
}

c10::intrusive_ptr<SwappedValue> swapIn(const c10::intrusive_ptr<SwappedValue>& s,
                                        const c10::intrusive_ptr<Arena>& arena, int64_t slot) {
  TORCH_CHECK(s->on_host, "actnn::swap_in: the value is not swapped out (swap_in twice?)");
  auto& backend = swapBackend(s->device.type());
  if (s->value.isTensor()) {
    const at::Tensor host = s->value.toTensor();
    at::Tensor slice = arena ? arena->acquire(slot, int64_t(host.nbytes())) : at::Tensor();
    at::Tensor dst = deviceTensorLike(host, s->device, slice, 0);
    s->pending.push_back(backend.toDevice(host, dst));
    s->value = dst;
  } else {
    auto p = s->value.toCustomClass<PackedActivation>();
    const PackedSliceLayout layout = packedSliceLayout(int64_t(p->codes.nbytes()), int64_t(p->lo.nbytes()),
                                                       arena ? arena->alignment : 1);
    at::Tensor slice = arena ? arena->acquire(slot, layout.bytes) : at::Tensor();
    at::Tensor codes = deviceTensorLike(p->codes, s->device, slice, 0);
    at::Tensor lo = deviceTensorLike(p->lo, s->device, slice, layout.lo_at);
    at::Tensor scale = deviceTensorLike(p->scale, s->device, slice, layout.scale_at);
    s->pending.push_back(backend.toDevice(p->codes, codes));
    s->pending.push_back(backend.toDevice(p->lo, lo));
    s->pending.push_back(backend.toDevice(p->scale, scale));
    s->value = c10::IValue(p->withParts(codes, lo, scale));
  }
  s->on_host = false;
  // The host copy is released here: on the CPU the copy is done, on CUDA the
  // pinned allocator keeps the block until the copy's event has passed.
  s->releaseHost();
  return s;
}

c10::IValue swapWait(const c10::intrusive_ptr<SwappedValue>& s) {
  TORCH_CHECK(!s->on_host && !s->value.isNone(),
              "actnn::swap_wait: the value was not brought back (swap_in missing before swap_wait)");
  for (auto& t : s->pending) t->wait();
  s->pending.clear();
  c10::IValue out = std::move(s->value);
  s->value = c10::IValue();
  return out;
}

}  // namespace actnn
