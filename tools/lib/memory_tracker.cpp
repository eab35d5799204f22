#include "memory_tracker.h"

#include <c10/core/Allocator.h>

#include <algorithm>
#include <atomic>

namespace actnn {
namespace tools {

struct MemoryTracker::Reporter : c10::MemoryReportingInfoBase {
  explicit Reporter(c10::DeviceType d) : device(d) {}
  const c10::DeviceType device;
  std::atomic<int64_t> live{0}, peak{0};
  void reportMemoryUsage(void*, int64_t delta, MemoryTotal, MemoryTotal, c10::Device where) override {
    if (where.type() != device) return;
    const int64_t now = live += delta;
    int64_t seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
  }
  bool memoryProfilingEnabled() const override { return true; }
};

MemoryTracker::MemoryTracker(c10::DeviceType device) : reporter_(std::make_shared<Reporter>(device)) {
  guard_ = std::make_unique<c10::DebugInfoGuard>(c10::DebugInfoKind::PROFILER_STATE, reporter_);
}

MemoryTracker::~MemoryTracker() = default;

int64_t MemoryTracker::live() const { return reporter_->live; }
int64_t MemoryTracker::peak() const { return reporter_->peak; }

}  // namespace tools
}  // namespace actnn
