// Counts allocator traffic for one device type: every allocation and free
// LibTorch's CPU allocator, or the CUDA caching allocator, reports through
// c10's memory-reporting hook (the one the profiler uses), on this thread and
// on the threads it hands work to (autograd's device threads inherit it).
// Live bytes are relative to when the tracker was made.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Allocator.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#include <memory>
#include <tuple>

namespace actnn {
namespace tools {

// The allocator's running totals in MemoryReportingInfoBase::reportMemoryUsage:
// int64_t in LibTorch 1.13, size_t in 2.x. Overrides spell them MemoryTotal.
template <typename R, typename C, typename... Args>
std::tuple<Args...> argumentsOf(R (C::*)(Args...));
using MemoryTotal =
    std::tuple_element_t<2, decltype(argumentsOf(&c10::MemoryReportingInfoBase::reportMemoryUsage))>;

class MemoryTracker {
 public:
  explicit MemoryTracker(c10::DeviceType device = c10::DeviceType::CPU);
  ~MemoryTracker();
  // Bytes allocated and not yet freed since construction (may go negative
  // when older tensors are freed).
  int64_t live() const;
  // The largest live() seen since construction.
  int64_t peak() const;

 private:
  struct Reporter;
  std::shared_ptr<Reporter> reporter_;
  std::unique_ptr<c10::DebugInfoGuard> guard_;
};

}  // namespace tools
}  // namespace actnn
