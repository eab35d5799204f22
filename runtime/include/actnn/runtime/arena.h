// The static memory plan of a compiled module's packed buffers (level L5):
// the TorchScript class `torch.classes.actnn.Arena`, held by the module as
// `_actnn_arena` and passed to F and B after the compression state.
//
// The plan-memory pass numbers every packed buffer the device holds (what
// actnn::compress, pack_mask and pack_pool_index produce in F, what
// actnn::swap_in brings back in B) as a *slot* with its lifetime in the
// timeline "F's nodes, then B's". Sizes depend on the input's shape and, for
// mixed-precision sites, on the bits the allocator grants, so offsets are
// found at run time:
//  * the first step with a new input shape measures: slots allocate as usual
//    and record what they held;
//  * every later step with that shape plans before F runs: each slot's size is
//    what it held, or for a mixed-precision site the bound its current budget
//    allows (floor(budget * samples) bits per sample-bit unit plus metadata),
//    offsets come from planArena (memory_plan.h), one buffer is allocated for
//    the step, and producers write into their slices. Each step has its own
//    Arena (beginStep), whose buffer is released when B is done (or with the
//    step, if B never runs).
// A producer that finds its slice too small (a shape that changed under the
// same input shape) allocates as usual, is counted in overflows(), and the
// next step measures again: nothing is written out of bounds or dropped.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "actnn/runtime/memory_plan.h"

namespace actnn {

struct CompressionState;

struct Arena : torch::CustomClassHolder {
  struct Slot {
    std::string name;
    int64_t first = 0, last = 0;  // lifetime, inclusive
    int64_t source = -1;          // swap_in slots: the slot whose bytes come back
    // Measured: a fixed size, or the shape of a mixed-precision site's codes.
    bool measured = false;
    int64_t bytes = 0;
    int64_t site = -1, samples = 0, bytes_per_bit = 0, meta_bytes = 0;
    // This step.
    int64_t planned = 0, offset = 0, used = 0;
  };

  Arena() = default;
  // slots: (name, first, last, source)
  Arena(int64_t alignment, std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>> slots);

  // Called on the module's arena before F: returns this step's own arena (F
  // and B get it), planned when `key` (the inputs' shapes, dtypes, device)
  // was measured, else measuring it. Steps never share a buffer, so
  // concurrent steps of one module (threads, or two forwards before their
  // backwards) are safe.
  c10::intrusive_ptr<Arena> beginStep(const std::vector<int64_t>& key, c10::Device device, CompressionState* state);
  // Called on a step's arena after B: releases its buffer and hands what it
  // measured (or its plan's figures) back to the module's arena.
  void endStep();

  // A uint8 view of `bytes` bytes for `slot`, or an undefined tensor when the
  // step is not planned (the caller allocates as usual).
  at::Tensor acquire(int64_t slot, int64_t bytes);
  // What a slot held this step (fixed size, or a mixed site's shape).
  void recordFixed(int64_t slot, int64_t bytes);
  void recordQuantized(int64_t slot, int64_t site, int64_t samples, int64_t bytes_per_bit, int64_t meta_bytes,
                       int64_t bytes);

  // The last planned step's slot sizes and lifetimes.
  std::vector<PlanBuffer> lastBuffers() const;
  int64_t alignment = 64;
  std::vector<Slot> slots;
  ArenaPlan plan;              // offsets of the current (or last) planned step
  int64_t planned_steps = 0, measured_steps = 0, overflows = 0;
  int64_t planned_bytes = 0, used_bytes = 0;  // the last planned step: sum of slot sizes, of bytes written

  using Pickled = std::tuple<int64_t, std::vector<std::string>, std::vector<int64_t>, std::vector<int64_t>,
                             std::vector<int64_t>>;
  Pickled pickle() const;
  static c10::intrusive_ptr<Arena> unpickle(Pickled p);

 private:
  Slot& slot(int64_t k);
  bool allMeasured() const;
  void planSlots(c10::Device device, CompressionState* state);
  std::mutex mutex_;
  std::vector<int64_t> key_;      // module: the measured input shape; step: its own
  bool planned_ = false;          // step: writes into buffer_
  bool stale_ = true;             // module: measure at the next step
  at::Tensor buffer_;             // step: the arena
  c10::intrusive_ptr<Arena> parent_;  // step: the module's arena
};

}  // namespace actnn
