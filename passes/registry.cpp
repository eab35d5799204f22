// The pass registry (read from passes.def), pipeline strings and the levels.
#include "actnn/passes/registry.h"

#include <sstream>

#include <c10/util/Exception.h>

namespace actnn {

#define ACTNN_PASS(flag, factory, summary) std::unique_ptr<Pass> factory();
#include "passes.def"
#undef ACTNN_PASS

const std::vector<PassInfo>& registeredPasses() {
  static const std::vector<PassInfo> passes = {
#define ACTNN_PASS(flag, factory, summary) {flag, summary, &factory},
#include "passes.def"
#undef ACTNN_PASS
  };
  return passes;
}

std::unique_ptr<Pass> createPass(const std::string& flag) {
  for (const auto& info : registeredPasses())
    if (flag == info.flag) return info.create();
  std::string known;
  for (const auto& info : registeredPasses()) known += std::string(known.empty() ? "" : ", ") + info.flag;
  throw CompileError("unknown pass '" + flag + "' (passes: " + known + ")");
}

namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\n"), e = s.find_last_not_of(" \t\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

void setOptions(Pass& pass, const std::string& flag, const std::string& body) {
  std::stringstream items(body);
  std::string item;
  while (std::getline(items, item, ',')) {
    item = trim(item);
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string::npos)
      throw CompileError("pass '" + flag + "': option '" + item + "' needs a value (name=value)");
    try {
      pass.options().set(trim(item.substr(0, eq)), trim(item.substr(eq + 1)));
    } catch (const CompileError& e) {
      throw CompileError("pass '" + flag + "': " + e.what());
    }
  }
}

}  // namespace

std::vector<PipelineStep> parsePipeline(const std::string& text) {
  std::vector<PipelineStep> steps;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i;
    while (j < text.size() && text[j] != ',' && text[j] != '{') ++j;
    std::string flag = trim(text.substr(i, j - i));
    if (flag.empty()) throw CompileError("empty pass name in pipeline '" + text + "'");
    PipelineStep step{flag, createPass(flag), flag};
    if (j < text.size() && text[j] == '{') {
      size_t close = text.find('}', j);
      if (close == std::string::npos)
        throw CompileError("pass '" + flag + "': missing '}' in pipeline '" + text + "'");
      setOptions(*step.pass, flag, text.substr(j + 1, close - j - 1));
      step.text = flag + text.substr(j, close + 1 - j);
      j = close + 1;
      if (j < text.size() && text[j] != ',')
        throw CompileError("expected ',' after '}' in pipeline '" + text + "'");
    }
    try {
      step.pass->checkOptions();
    } catch (const CompileError& e) {
      throw CompileError("error: " + flag + ": " + e.what());
    }
    steps.push_back(std::move(step));
    i = j + 1;
  }
  if (steps.empty()) throw CompileError("empty pipeline");
  return steps;
}

std::string levelPipeline(const std::string& level) {
  // L0: the training graph alone.
  //  - lower-module first: every later pass sees one graph whose inputs are
  //    the user inputs plus the lifted parameters and buffers, with the
  //    module's attributes (the training flag included) folded to constants.
  //  - canonicalize next: folding the training flag makes eval-only branches
  //    dead, and autodiff needs mutation-free IR with one spelling per op.
  //  - autodiff: splits the program into F and B and makes the saved set
  //    explicit, which is what the compression levels rewrite;
  //  - order-backward: B's independent gradient branches, short one last (a
  //    ResNet shortcut's gradient no longer waits through the main branch).
  const std::string l0 = "lower-module,canonicalize,autodiff,order-backward";
  if (level == "L0") return l0;
  // L1-L3 compress the saved set F and B agree on after autodiff:
  //  - saved-set classifies each saved value (what is held anyway, what is a
  //    mask, an index, an activation), which insert-compression acts on;
  //  - insert-compression then packs masks and indices at every level (exact,
  //    1 bit whatever the level) and quantizes activations: L1 the inputs of
  //    convolutions at 4 bits, L2 every activation at 4 bits, L3 every
  //    activation at 2 bits on average, mixed across layers and samples.
  //  - debias-backward then corrects B's readers that square a rounded
  //    value's noise (batch / layer / group norm, softmax, tanh, sigmoid),
  //    so their gradients stay unbiased; it must see the plain ATen backward
  //    ops, before reuse-buffers replaces them.
  //  - reuse-buffers then lets B write gradients into the dequantized
  //    activations and gradients that die where they are read.
  const std::string compress = l0 + ",saved-set,insert-compression";
  const std::string reuse = ",debias-backward,reuse-buffers";
  if (level == "L1") return compress + "{bits=4,only=conv-inputs}" + reuse;
  if (level == "L2") return compress + "{bits=4}" + reuse;
  if (level == "L3") return compress + "{bits=2,mixed=true}" + reuse;
  // L4 keeps L3's compression and moves what it packs off the device:
  //  - schedule-swap runs last in F's and B's construction, once every packed
  //    value exists; each goes to host memory right after it is made and
  //    comes back two uses ahead of its first use in B (enough to hide one
  //    copy behind the backward of one layer on a GPU).
  if (level == "L4") return compress + "{bits=2,mixed=true}" + reuse + ",schedule-swap{prefetch=2}";
  // L5 is the level for the largest batch:
  //  - reuse-buffers also runs each convolution's backward over 4 MiB slices
  //    of the batch, so the copies oneDNN makes of a call's operands stay
  //    that small (more, smaller calls: time for memory);
  //  - plan-memory places what is still on the device in one static arena;
  //    it must see the final F and B (swap_in included), so it runs last.
  if (level == "L5")
    return compress + "{bits=2,mixed=true}" + reuse + "{chunk-bytes=4194304},schedule-swap{prefetch=2},plan-memory";
  throw CompileError("unknown level '" + level + "' (levels: L0..L5)");
}

void runPipeline(std::vector<PipelineStep>& steps, TrainingIR& ir,
                 const std::function<void(const std::string&, const TrainingIR&)>& after) {
  for (auto& step : steps) {
    Diagnostics diag;
    try {
      step.pass->checkOptions();
      step.pass->run(ir, diag);
    } catch (const c10::Error& e) {
      const std::string what = e.what_without_backtrace();
      if (what.find("INTERNAL ASSERT FAILED") != std::string::npos)
        throw InternalError("error: " + step.flag +
                            ": internal error: a LibTorch assertion failed inside the pass (a bug in actnn, or an "
                            "input its validation let through; please report it with the input): " +
                            what.substr(0, what.find('\n')));
      diag.error(what);
    } catch (const std::exception& e) {  // CompileError too: it gets the pass name
      diag.error(e.what());
    }
    diag.throwIfErrors(step.flag);
    if (step.flag != "specialize-shapes") ir.pipeline += (ir.pipeline.empty() ? "" : ",") + step.text;
    if (after) after(step.flag, ir);
  }
}

}  // namespace actnn
