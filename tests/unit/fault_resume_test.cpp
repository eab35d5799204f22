// Faults in the middle of a step, and resume from a saved module, at L0, L3
// and L5 (issue 19), on the small nets of tests/models/export_small_nets.py.
//
// Faults are real allocation failures: this executable routes LibTorch's CPU
// allocations through FaultyAllocator, which counts them, tracks the bytes
// alive, and when armed throws c10::OutOfMemoryError at the k-th allocation
// from now. A step is counted once to learn how many allocations its forward
// (F, with the runtime's set-up) and its backward (B) make; then a step fails
// at a quarter and at three quarters of each. What must hold:
//  - the exception reaches the caller, nothing crashes;
//  - once the failed step's tensors are dropped, the bytes alive are those
//    before it (the L5 arena's buffer and the packed values are released);
//  - retrying the step, and the steps after it, give parameters bit for bit
//    equal to a run that never failed (the failed attempt leaves nothing in
//    the L3 statistics or the step count that seeds quantization). Batch-norm
//    running statistics, which F updates as it goes exactly as autograd's
//    forward does, are not compared: train-mode gradients do not read them.
// Resume: training saved after some steps (module + the optimizer's momentum)
// and loaded again continues bit for bit like the run that went on.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/serialization/import.h>

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "actnn/actnn.h"
#include "actnn/runtime/compression.h"
#include "test_util.h"

namespace {

// LibTorch's CPU allocator, counted and made to fail on demand.
class FaultyAllocator final : public c10::Allocator {
 public:
  explicit FaultyAllocator(c10::Allocator* base) : base_(base) {}

  // LibTorch 1.13 declares allocate const, 2.x not; whichever matches the
  // base class overrides it (and copy_data exists from 2.x on).
  c10::DataPtr allocate(size_t n) const { return const_cast<FaultyAllocator*>(this)->allocateCounted(n); }
  c10::DataPtr allocate(size_t n) { return allocateCounted(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const {
    if (count) std::memcpy(dest, src, count);
  }
  // mkldnn allocates through raw_allocate / raw_deallocate.
  c10::DeleterFnPtr raw_deleter() const override { return base_->raw_deleter() ? &release : nullptr; }

  void arm(int64_t after) { countdown_ = after; }
  void disarm() { countdown_ = -1; }
  int64_t allocations() const { return allocations_; }
  int64_t live() const { return live_; }
  bool fired() const { return fired_; }
  void reset_fired() { fired_ = false; }

 private:
  // LibTorch's CPU kernels expect a DataPtr's context to be its data, so the
  // allocations alive are found by address.
  static void release(void* data) {
    FaultyAllocator& self = *instance_;
    c10::DataPtr inner;
    {
      std::lock_guard<std::mutex> lock(self.mutex_);
      auto it = self.held_.find(data);
      if (it == self.held_.end()) {
        // Memory LibTorch took elsewhere (mkldnn's raw_allocate may bypass
        // allocate()) and hands back through raw_deleter().
        self.base_->raw_deleter()(data);
        return;
      }
      self.live_ -= int64_t(it->second.second);
      inner = std::move(it->second.first);
      self.held_.erase(it);
    }
  }
  c10::DataPtr allocateCounted(size_t n) {
    ++allocations_;
    if (countdown_.load() >= 0 && countdown_.fetch_sub(1) == 0) {
      fired_ = true;
      TORCH_CHECK_WITH(OutOfMemoryError, false, "FaultyAllocator: injected failure of a ", n, "-byte allocation");
    }
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    const c10::Device device = inner.device();
    std::lock_guard<std::mutex> lock(mutex_);
    instance_ = this;
    live_ += int64_t(n);
    held_.emplace(data, std::make_pair(std::move(inner), n));
    return {data, data, &release, device};
  }

  static inline FaultyAllocator* instance_ = nullptr;
  std::mutex mutex_;
  std::unordered_map<void*, std::pair<c10::DataPtr, size_t>> held_;
  c10::Allocator* base_;
  std::atomic<int64_t> countdown_{-1}, allocations_{0}, live_{0};
  std::atomic<bool> fired_{false};
};

FaultyAllocator& faulty() {
  static FaultyAllocator* allocator = [] {
    auto* a = new FaultyAllocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(a, /*priority=*/100);
    return a;
  }();
  return *allocator;
}

std::string modelPath(const std::string& name) { return std::string(ACTNN_TEST_MODELS_DIR) + "/" + name + ".pt"; }

at::Tensor seeded(at::IntArrayRef shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen);
}

// A compiled net and its optimizer (SGD with momentum, whose buffers are the
// optimizer state a resume must carry).
struct Training {
  torch::jit::Module module;
  std::vector<at::Tensor> momentum;

  static Training compiled(const std::string& level) {
    actnn::Options options;
    options.level = level;
    return {actnn::compile(torch::jit::load(modelPath("residual")), options), {}};
  }

  // F of step i (the quantization seed from at::manual_seed, as a training
  // script seeds it), and the loss.
  at::Tensor forward(int64_t i) {
    for (const auto& p : module.parameters()) p.mutable_grad() = at::Tensor();
    at::manual_seed(1000 + i);
    // Samples of scales that change from step to step, so the L3 budgets
    // (averages of per-sample widths) move.
    at::Tensor x = seeded({8, 3, 16, 16}, i);
    for (int64_t n = 0; n < 8; ++n) x[n].mul_(std::pow(8.0, double((i + n) % 3)));
    const at::Tensor out = module.forward({x}).toTensor();
    return (out * seeded(out.sizes(), 77)).sum();
  }

  void update() {
    at::NoGradGuard no_grad;
    const auto params = module.parameters();
    size_t k = 0;
    for (const auto& p : params) {
      if (momentum.size() <= k) momentum.push_back(at::zeros_like(p));
      momentum[k].mul_(0.9).add_(p.grad());
      p.sub_(momentum[k], 0.05);
      ++k;
    }
  }

  void step(int64_t i) {
    forward(i).backward();
    update();
  }

  std::vector<at::Tensor> parameters() const {
    std::vector<at::Tensor> out;
    for (const auto& p : module.parameters()) out.push_back(p.detach().clone());
    return out;
  }
};

void expectBitEqual(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t k = 0; k < a.size(); ++k) EXPECT_TRUE(actnn::test::bytes_equal(a[k], b[k])) << what << ": parameter " << k;
}

std::vector<double> budgetsOf(const torch::jit::Module& m) {
  std::vector<double> out;
  auto state = m.attr("_actnn_state").toCustomClass<actnn::CompressionState>();
  for (const auto& site : state->sites) out.push_back(site.budget);
  return out;
}

class FaultAndResume : public ::testing::TestWithParam<std::string> {};

TEST_P(FaultAndResume, FailedStepLeavesNoTrace) {
  faulty();  // installed before anything is compiled
  const std::string level = GetParam();
  constexpr int64_t kSteps = 4, kFailing = 2;

  Training reference = Training::compiled(level);
  for (int64_t i = 1; i <= kSteps; ++i) reference.step(i);
  const auto expected = reference.parameters();

  // How many allocations F and B of a step make (step 2 of a fresh run: the
  // first step specializes, measures the L5 arena and has no statistics).
  int64_t in_forward = 0, in_backward = 0;
  {
    Training probe = Training::compiled(level);
    probe.step(1);
    const int64_t before = faulty().allocations();
    at::Tensor loss = probe.forward(kFailing);
    const int64_t after_forward = faulty().allocations();
    loss.backward();
    in_forward = after_forward - before;
    in_backward = faulty().allocations() - after_forward;
  }
  ASSERT_GT(in_forward, 8);
  ASSERT_GT(in_backward, 8);

  struct Fault {
    const char* phase;
    int64_t at;
  };
  const Fault faults[] = {{"forward", in_forward / 4},
                          {"forward", 3 * in_forward / 4},
                          {"backward", in_backward / 4},
                          {"backward", 3 * in_backward / 4}};
  int64_t first_baseline = -1;
  for (const auto& fault : faults) {
    const std::string what = level + ", " + fault.phase + " allocation " + std::to_string(fault.at);
    Training run = Training::compiled(level);
    for (int64_t i = 1; i < kFailing; ++i) run.step(i);
    for (const auto& p : run.module.parameters()) p.mutable_grad() = at::Tensor();  // as forward() does
    const int64_t live_before = faulty().live();
    // Each fault gets a freshly compiled module; the one before it is gone,
    // and must have left nothing behind (the runtime's program cache kept
    // every compiled module's programs, about 17.6 KB a module here).
    if (first_baseline < 0) first_baseline = live_before;
    EXPECT_EQ(live_before, first_baseline) << what << ": a compiled module dropped before left bytes behind";
    faulty().reset_fired();
    bool threw = false;
    try {
      const bool in_f = std::string(fault.phase) == "forward";
      if (in_f) faulty().arm(fault.at);
      at::Tensor loss = run.forward(kFailing);
      if (!in_f) faulty().arm(fault.at);
      loss.backward();
    } catch (const std::exception&) {
      threw = true;
    }
    faulty().disarm();
    ASSERT_TRUE(faulty().fired()) << what;
    EXPECT_TRUE(threw) << what << ": the injected failure did not reach the caller";
    // At most: abandoning an L3 step also drops the gradient norms the step
    // before had left (already solved into budgets).
    EXPECT_LE(faulty().live(), live_before) << what << ": bytes still held after the failed step";
    for (int64_t i = kFailing; i <= kSteps; ++i) run.step(i);
    expectBitEqual(run.parameters(), expected, what);
  }
}

TEST_P(FaultAndResume, SavedAndLoadedRunContinuesBitForBit) {
  const std::string level = GetParam();
  constexpr int64_t kSteps = 6, kSaveAfter = 3;
  Training straight = Training::compiled(level);
  std::vector<std::vector<double>> budgets;  // after each step's forward
  for (int64_t i = 1; i <= kSteps; ++i) {
    at::Tensor loss = straight.forward(i);
    if (level != "L0") budgets.push_back(budgetsOf(straight.module));
    loss.backward();
    straight.update();
  }
  // The test's power: the budgets the step after the save solves differ from
  // those saved, so a resume that lost the statistics would differ.
  if (level != "L0") {
    ASSERT_NE(budgets[kSaveAfter], budgets[kSaveAfter - 1]);
  }

  Training first = Training::compiled(level);
  for (int64_t i = 1; i <= kSaveAfter; ++i) first.step(i);
  std::stringstream archive;
  first.module.save(archive);
  Training resumed{torch::jit::load(archive), {}};
  for (const auto& m : first.momentum) resumed.momentum.push_back(m.clone());
  for (int64_t i = kSaveAfter + 1; i <= kSteps; ++i) resumed.step(i);
  expectBitEqual(resumed.parameters(), straight.parameters(), level + " resumed after step 3");
}

INSTANTIATE_TEST_SUITE_P(Levels, FaultAndResume, ::testing::Values("L0", "L3", "L5"),
                         [](const auto& info) { return info.param; });

}  // namespace
