// The saved set of a compiled training graph, one row per value F saves for
// B: what it is, its shape, its full-precision bytes and the bytes it is
// stored in (actnn-opt --report). Shapes and bytes come from running F once
// on random inputs of the given shapes (no gradients), so they are exact for
// those shapes, mixed precision included (its first step: before any
// backward, every sample of a mixed site gets the budget's widths by range).
#pragma once

#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "actnn/runtime/memory_plan.h"
#include "actnn/actnn.h"
#include "actnn/passes/ir.h"

namespace actnn {
namespace tools {

struct SavedRow {
  size_t index = 0;
  std::string kind;   // savedKindName, or "held" for graph inputs
  std::string value;  // SavedValue::name, or the value's producer
  bool tensor = true;  // false for metadata (lists, scalars)
  std::vector<int64_t> shape;
  std::string dtype;
  int64_t full_bytes = 0;    // as LibTorch would hold it (0 for held values and metadata)
  int64_t stored_bytes = 0;  // as the compiled module holds it
  std::string bits;          // bits per value as stored: "32", "4", "1.88" (mixed), "-" (metadata)
  bool dither = false;       // a packed activation decoded with subtractive dither
};

// One --input-shape entry: sizes, and a dtype when given (else float32).
struct InputShape {
  std::vector<int64_t> sizes;
  c10::optional<c10::ScalarType> dtype;
};
// "x:8x3x224x224,ids:8x16:int64" -> {x: [8,3,224,224], ids: [8,16] int64};
// throws UsageError.
std::map<std::string, InputShape> parseInputShapes(const std::string& text);
// Options::input_shapes and input_dtypes from parsed entries.
void setInputShapes(Options& options, const std::map<std::string, InputShape>& shapes);

// One slot of plan-memory's arena: its lifetime, size for the given input
// shape, and the offset the runtime's planner gives it.
struct ArenaSlotRow {
  std::string name;
  int64_t first = 0, last = 0, source = -1;
  int64_t bytes = 0, offset = 0;
};

struct SavedReport {
  std::vector<SavedRow> rows;
  size_t rule_ops = 0;                     // F's nodes differentiated by a rule
  std::vector<std::string> fallback_ops;   // ... and under the autograd fallback
  std::vector<std::string> branch_ops;     // data-dependent prim::If nodes differentiated per branch
  std::vector<ArenaSlotRow> slots;  // after plan-memory
  ArenaPlan plan;                   // after plan-memory
};

// Runs F of `ir` (after autodiff) once and describes every saved value (the
// packed value itself where schedule-swap moves it to the host) and, after
// plan-memory, the arena the runtime would plan for these shapes.
// Every user input that is a tensor needs a shape; parameters and buffers
// come from the module.
SavedReport savedSetReport(const TrainingIR& ir, const std::map<std::string, InputShape>& shapes);

void printReport(std::ostream& os, const SavedReport& report, bool json);

}  // namespace tools
}  // namespace actnn
