#include "saved_report.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/runtime/interpreter.h>

#include <cstdio>
#include <sstream>

#include "actnn/actnn.h"
#include "actnn/runtime/arena.h"
#include "actnn/runtime/compression.h"
#include "actnn/runtime/training.h"
#include "args.h"
#include "json.h"
#include "memory_tracker.h"

namespace actnn {
namespace tools {
namespace {

using torch::jit::Node;
using torch::jit::Value;

std::string shapeText(const std::vector<int64_t>& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s.empty() ? "scalar" : s;
}

std::string mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f MiB", double(bytes) / 1048576.0);
  return buf;
}

}  // namespace

std::map<std::string, InputShape> parseInputShapes(const std::string& text) {
  std::map<std::string, InputShape> out;
  std::stringstream items(text);
  for (std::string item; std::getline(items, item, ',');) {
    const auto colon = item.find(':');
    if (colon == std::string::npos || colon == 0)
      throw UsageError("--input-shape expects NAME:DIMxDIM...[:DTYPE], got '" + item + "'");
    InputShape shape;
    std::string dims = item.substr(colon + 1);
    const auto dtype_colon = dims.find(':');
    if (dtype_colon != std::string::npos) {
      shape.dtype = dtypeNamed(dims.substr(dtype_colon + 1));
      if (!shape.dtype)
        throw UsageError("--input-shape: '" + dims.substr(dtype_colon + 1) + "' in '" + item +
                         "' is not a dtype (float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8, "
                         "bool)");
      dims.resize(dtype_colon);
    }
    std::stringstream ds(dims);
    for (std::string d; std::getline(ds, d, 'x');) {
      try {
        size_t used = 0;
        shape.sizes.push_back(std::stoll(d, &used));
        if (used != d.size() || shape.sizes.back() < 0) throw std::invalid_argument(d);
      } catch (const std::exception&) {
        throw UsageError("--input-shape: '" + d + "' in '" + item + "' is not a dimension");
      }
    }
    out[item.substr(0, colon)] = shape;
  }
  return out;
}

void setInputShapes(Options& options, const std::map<std::string, InputShape>& shapes) {
  for (const auto& [name, shape] : shapes) {
    options.input_shapes.emplace_back(name, shape.sizes);
    if (shape.dtype) options.input_dtypes[name] = *shape.dtype;
  }
}

SavedReport savedSetReport(const TrainingIR& compiled, const std::map<std::string, InputShape>& shapes) {
  if (!compiled.forward) throw UsageError("--report needs the training graphs: run a level or a pipeline with autodiff");
  TrainingIR ir = compiled;  // shares the graphs; saved-set only fills `saved`
  if (ir.saved.size() != ir.numSaved()) runPipelineText("saved-set", ir);
  auto f = ir.forward->copy();
  // Where schedule-swap moves a packed value to the host, report the value.
  for (size_t i = ir.num_outputs; i < f->outputs().size(); ++i) {
    Node* n = f->outputs()[i]->node();
    if (n->kind() != c10::Symbol::fromQualString("actnn::swap_out")) continue;
    f->block()->replaceOutput(i, n->input(0));
    if (!n->output()->hasUses()) n->destroy();
  }
  // Also return what each packing op packs, to know its full-precision size.
  const size_t first_saved = ir.num_outputs, num_saved = f->outputs().size() - ir.num_outputs;
  std::vector<int64_t> original(num_saved, -1);  // extra output index of the packed value
  for (size_t i = 0; i < num_saved; ++i) {
    Node* n = f->outputs()[first_saved + i]->node();
    const std::string kind = n->kind().toQualString();
    if (kind == "actnn::pack_mask" || kind == "actnn::pack_pool_index") {
      original[i] = int64_t(f->outputs().size());
      f->registerOutput(n->input(0));
    }
  }

  // LibTorch's CPU allocator reports a free only for memory it allocated
  // while someone listened (and warns about the others): listen from before
  // the inputs exist, so that releasing a fallback's graph below is seen.
  MemoryTracker listening;
  torch::jit::Stack stack;
  at::manual_seed(0);
  std::map<std::string, bool> used;
  for (size_t i = 0; i < ir.inputs.size(); ++i) {
    const auto& in = ir.inputs[i];
    if (in.role != InputRole::Input) {
      if (!ir.module) throw UsageError("--report: graph text has no module to take '" + in.name + "' from");
      stack.push_back(attributePath(ir.module->_ivalue(), in.name));
      continue;
    }
    if (!ir.forward->inputs()[i]->type()->isSubtypeOf(*c10::TensorType::get()))
      throw UsageError("--report: input '" + in.name + "' is not a tensor; only tensor inputs can be given a shape");
    auto it = shapes.find(in.name);
    if (it == shapes.end()) throw UsageError("--report needs --input-shape=" + in.name + ":DIMxDIM...");
    used[in.name] = true;
    // Integer inputs (indices, labels) as zeros: a valid index whatever
    // they index.
    const at::ScalarType dtype = it->second.dtype.value_or(at::kFloat);
    stack.emplace_back(at::isFloatingType(dtype) ? at::randn(it->second.sizes, at::TensorOptions().dtype(dtype))
                                                 : at::zeros(it->second.sizes, at::TensorOptions().dtype(dtype)));
  }
  for (const auto& s : shapes)
    if (!used.count(s.first)) throw UsageError("--input-shape names '" + s.first + "', which is not a forward input");
  if (ir.compression) {
    c10::IValue state = makeCompressionState(*ir.compression);
    state.toCustomClass<CompressionState>()->beginStep();
    stack.emplace_back(std::move(state));
  }
  // The arena, unplanned: its slots record their sizes as F runs.
  c10::intrusive_ptr<Arena> arena;
  if (ir.arena) {
    std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>> slots;
    for (const auto& s : ir.arena->slots) slots.emplace_back(s.name, s.first, s.last, s.source);
    arena = c10::make_intrusive<Arena>(ir.arena->alignment, std::move(slots));
    stack.emplace_back(arena);
  }
  {
    at::NoGradGuard no_grad;
    torch::jit::Code code(f, "actnn_report");
    torch::jit::InterpreterState(code).run(stack);
  }
  std::vector<c10::IValue> outs(std::make_move_iterator(stack.end() - f->outputs().size()),
                                std::make_move_iterator(stack.end()));
  stack.clear();
  // What an autograd fallback's graph keeps is what releasing it frees
  // (storage F's other values or inputs share is not counted: it stays).
  std::map<size_t, int64_t> fallback_bytes;
  for (size_t i = 0; i < num_saved; ++i) {
    if (ir.saved[i].kind != SavedKind::Fallback) continue;
    MemoryTracker tracker;
    outs[first_saved + i] = c10::IValue();
    fallback_bytes[i] = -tracker.live();
  }

  SavedReport report;
  report.rule_ops = ir.rule_ops;
  report.fallback_ops = ir.fallback_ops;
  report.branch_ops = ir.branch_ops;
  if (arena) {
    std::vector<PlanBuffer> buffers;
    for (const auto& s : arena->slots) {
      const int64_t bytes = s.source >= 0 ? arena->slots[size_t(s.source)].bytes : s.bytes;
      buffers.push_back({bytes, s.first, s.last});
      report.slots.push_back({s.name, s.first, s.last, s.source, bytes, 0});
    }
    report.plan = planArena(buffers, arena->alignment);
    for (size_t k = 0; k < report.slots.size(); ++k) report.slots[k].offset = report.plan.offsets[k];
  }
  std::vector<SavedRow>& rows = report.rows;
  for (size_t i = 0; i < num_saved; ++i) {
    const c10::IValue& v = outs[first_saved + i];
    Value* fv = f->outputs()[first_saved + i];
    SavedRow r;
    r.index = i;
    r.kind = savedKindName(ir.saved[i].kind);
    r.value = ir.saved[i].name;
    const std::string producer = fv->node()->kind().toQualString();
    if (v.isTensor()) {
      const at::Tensor t = v.toTensor();
      r.shape = t.sizes().vec();
      r.dtype = c10::toString(t.scalar_type());
      r.stored_bytes = ir.saved[i].kind == SavedKind::Held ? 0 : int64_t(t.nbytes());
      r.full_bytes = r.stored_bytes;
      r.bits = std::to_string(t.element_size() * 8);
      if (original[i] >= 0) {
        const at::Tensor o = outs[size_t(original[i])].toTensor();
        r.shape = o.sizes().vec();
        r.dtype = c10::toString(o.scalar_type());
        r.full_bytes = int64_t(o.nbytes());
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%.3g", 8.0 * double(r.stored_bytes) / double(std::max<int64_t>(o.numel(), 1)));
        r.bits = producer == "actnn::pack_mask" ? std::string("1") : std::string(buf);
      }
    } else if (v.isCustomClass() && producer == "actnn::compress") {
      auto p = v.toCustomClass<PackedActivation>();
      r.shape = p->original_shape();
      r.dtype = c10::toString(p->original_type());
      r.full_bytes = p->original_nbytes();
      r.stored_bytes = p->nbytes();
      double sum = 0;
      for (int64_t b : p->bits) sum += double(b);
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.3g", sum / double(p->bits.size()));
      r.bits = buf;
      r.dither = p->dither;
    } else if (ir.saved[i].kind == SavedKind::Fallback) {
      // Held as autograd holds it: full precision.
      r.tensor = false;
      r.dtype = "-";
      r.full_bytes = r.stored_bytes = fallback_bytes[i];
      r.bits = "32";
    } else {
      r.tensor = false;
      r.dtype = fv->type()->repr_str();
      r.bits = "-";
    }
    rows.push_back(std::move(r));
  }
  return report;
}

void printReport(std::ostream& os, const SavedReport& report, bool json) {
  const std::vector<SavedRow>& rows = report.rows;
  const ArenaPlan& plan = report.plan;
  const double slack = double(plan.arena_bytes) / double(std::max<int64_t>(plan.lower_bound_bytes, 1));
  int64_t full = 0, stored = 0;
  for (const auto& r : rows) {
    full += r.full_bytes;
    stored += r.stored_bytes;
  }
  const double ratio = double(full) / double(std::max<int64_t>(stored, 1));
  if (json) {
    for (const auto& r : rows)
      os << JsonLine()
                .add("index", int64_t(r.index))
                .add("kind", r.kind)
                .add("value", r.value)
                .add("shape", r.tensor ? shapeText(r.shape) : "-")
                .add("dtype", r.dtype)
                .add("full_bytes", r.full_bytes)
                .add("stored_bytes", r.stored_bytes)
                .add("bits", r.bits)
                .add("dither", r.dither);
    for (size_t k = 0; k < report.slots.size(); ++k) {
      const auto& s = report.slots[k];
      os << JsonLine()
                .add("slot", int64_t(k))
                .add("name", s.name)
                .add("first", s.first)
                .add("last", s.last)
                .add("source", s.source)
                .add("bytes", s.bytes)
                .add("offset", s.offset);
    }
    JsonLine summary;
    summary.add("saved_values", int64_t(rows.size()))
        .add("full_bytes", full)
        .add("stored_bytes", stored)
        .add("ratio", ratio)
        .add("rule_ops", int64_t(report.rule_ops))
        .add("fallback_ops", int64_t(report.fallback_ops.size()))
        .add("branch_ops", int64_t(report.branch_ops.size()));
    if (!report.slots.empty())
      summary.add("arena_slots", int64_t(report.slots.size()))
          .add("arena_bytes", plan.arena_bytes)
          .add("lower_bound_bytes", plan.lower_bound_bytes)
          .add("arena_ratio", slack)
          .add("heuristic", plan.heuristic);
    os << summary;
    return;
  }
  char line[512];
  std::snprintf(line, sizeof(line), "saved set: %zu values, %s at full precision, %s stored (%.2fx)\n", rows.size(),
                mib(full).c_str(), mib(stored).c_str(), ratio);
  os << line;
  os << "differentiated: " << report.rule_ops << " ops by rule, " << report.fallback_ops.size()
     << " under the autograd fallback" << (report.fallback_ops.empty() ? "" : ":") << "\n";
  for (const auto& op : report.fallback_ops) os << "  " << op << "\n";
  if (!report.branch_ops.empty()) {
    os << "data-dependent branches: " << report.branch_ops.size()
       << " (F records the condition, B runs the taken branch's backward):\n";
    for (const auto& op : report.branch_ops) os << "  " << op << "\n";
  }
  std::snprintf(line, sizeof(line), "%4s  %-10s  %-16s  %-8s  %12s  %12s  %-7s  %s\n", "#", "kind", "shape", "dtype",
                "full", "stored", "bits", "value");
  os << line;
  for (const auto& r : rows) {
    const std::string value = r.dither ? r.value + " (dithered)" : r.value;
    std::snprintf(line, sizeof(line), "%4zu  %-10s  %-16s  %-8s  %12s  %12s  %-7s  %s\n", r.index, r.kind.c_str(),
                  r.tensor ? shapeText(r.shape).c_str() : "-", r.dtype.c_str(), mib(r.full_bytes).c_str(), mib(r.stored_bytes).c_str(),
                  r.bits.c_str(), value.c_str());
    os << line;
  }
  if (report.slots.empty()) return;
  std::snprintf(line, sizeof(line), "arena: %zu slots, %s (lower bound %s, %.4fx, %s)\n", report.slots.size(),
                mib(plan.arena_bytes).c_str(), mib(plan.lower_bound_bytes).c_str(), slack, plan.heuristic.c_str());
  os << line;
  std::snprintf(line, sizeof(line), "%4s  %6s  %6s  %6s  %12s  %12s  %s\n", "slot", "first", "last", "source", "bytes",
                "offset", "name");
  os << line;
  for (size_t k = 0; k < report.slots.size(); ++k) {
    const auto& s = report.slots[k];
    std::snprintf(line, sizeof(line), "%4zu  %6lld  %6lld  %6lld  %12lld  %12lld  %s\n", k, (long long)s.first,
                  (long long)s.last, (long long)s.source, (long long)s.bytes, (long long)s.offset, s.name.c_str());
    os << line;
  }
}

}  // namespace tools
}  // namespace actnn
