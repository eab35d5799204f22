#include "memory_tracker.h"

#include <c10/core/Allocator.h>

#include <algorithm>

namespace actnn {
namespace tools {

struct MemoryTracker::Reporter : c10::MemoryReportingInfoBase {
  int64_t live = 0, peak = 0;
  void reportMemoryUsage(void*, int64_t delta, int64_t, int64_t, c10::Device device) override {
    if (!device.is_cpu()) return;
    live += delta;
    peak = std::max(peak, live);
  }
  bool memoryProfilingEnabled() const override { return true; }
};

MemoryTracker::MemoryTracker() : reporter_(std::make_shared<Reporter>()) {
  guard_ = std::make_unique<c10::DebugInfoGuard>(c10::DebugInfoKind::PROFILER_STATE, reporter_);
}

MemoryTracker::~MemoryTracker() = default;

int64_t MemoryTracker::live() const { return reporter_->live; }
int64_t MemoryTracker::peak() const { return reporter_->peak; }
void MemoryTracker::resetPeak() { reporter_->peak = reporter_->live; }

}  // namespace tools
}  // namespace actnn
