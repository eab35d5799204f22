// Swapping packed saved values to host memory and back (level L4).
//
// A rewritten forward graph calls actnn::swap_out on each packed value right
// after it is produced; the backward graph calls actnn::swap_in a few uses
// before the value is needed and actnn::swap_wait (swap_wait_tensor for
// packed masks and indices) right before its use. In between, the value lives
// in a SwappedValue, the TorchScript class `torch.classes.actnn.SwappedValue`.
//
// How bytes move is up to a backend per device type:
//  * CUDA (swap_cuda.cpp): pinned host memory, copies on a side stream, an
//    event per copy; the compute stream waits only at swap_wait, and device
//    buffers are recorded on the side stream so the caching allocator does
//    not reuse them before the copy has read them.
//  * CPU: the same schedule with host-to-host moves. The "host" copy lives in
//    memory taken from malloc, not from LibTorch's CPU allocator, so the
//    allocator's counters (what actnn-bench measures as the device's memory)
//    drop by exactly what was swapped out, while swapHostBytes() counts the
//    host side. On a CPU both are the same RAM; benchmarks print both.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include <cstdint>
#include <memory>

#include "actnn/runtime/arena.h"

namespace actnn {

// A copy in flight; wait() makes the caller's stream wait for it.
struct SwapTicket {
  virtual ~SwapTicket() = default;
  virtual void wait() = 0;
};

struct SwapBackend {
  virtual ~SwapBackend() = default;
  // Starts copying device tensor `t` to host memory and returns the host
  // tensor (valid for reading by later copies on the same backend).
  virtual at::Tensor toHost(const at::Tensor& t) = 0;
  // Starts copying host tensor `host` into device tensor `dst` (same size).
  virtual std::unique_ptr<SwapTicket> toDevice(const at::Tensor& host, const at::Tensor& dst) = 0;
  // Makes the compute stream wait for every copy to the host started so far
  // (before a planned arena slot that such a copy read is written again).
  virtual void fenceHostCopies(c10::Device device) = 0;
};

// Registered once per device type at load time.
void registerSwapBackend(c10::DeviceType type, SwapBackend* backend);
SwapBackend& swapBackend(c10::DeviceType type);

// Bytes of swapped-out values currently held in host memory, and the peak
// since the last reset (all modules, all threads).
int64_t swapHostBytes();
int64_t swapHostPeakBytes();
void resetSwapHostPeak();

struct SwappedValue : torch::CustomClassHolder {
  c10::IValue value;           // a PackedActivation or a Tensor; host copies while swapped out
  c10::Device device{c10::kCPU};  // where the value was and will be used
  bool on_host = false;
  int64_t host_bytes = 0;      // counted in swapHostBytes() while held
  std::vector<std::unique_ptr<SwapTicket>> pending;  // copies back to the device

  ~SwappedValue() override;
  void releaseHost();
};

// The ops (schemas in ops.cpp).
c10::intrusive_ptr<SwappedValue> swapOut(const c10::IValue& value);
// arena: when given, the value comes back into `slot` of the step's arena.
c10::intrusive_ptr<SwappedValue> swapIn(const c10::intrusive_ptr<SwappedValue>& s,
                                        const c10::intrusive_ptr<Arena>& arena, int64_t slot);
c10::IValue swapWait(const c10::intrusive_ptr<SwappedValue>& s);

}  // namespace actnn
