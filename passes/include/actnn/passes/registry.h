// The one list of passes (passes.def) and pipelines built from it: explicit
// pipeline strings (`lower-module,canonicalize{shape-checks=keep},autodiff`)
// and the named levels L0..L5.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actnn/passes/pass.h"

namespace actnn {

struct PassInfo {
  const char* flag;
  const char* summary;
  std::unique_ptr<Pass> (*create)();
};
const std::vector<PassInfo>& registeredPasses();
std::unique_ptr<Pass> createPass(const std::string& flag);  // throws CompileError

struct PipelineStep {
  std::string flag;
  std::unique_ptr<Pass> pass;
  std::string text;  // as written: "insert-compression{bits=2,mixed=true}"
};
// Parses "a,b{k=v,k2=v2}"; throws CompileError naming the bad pass or option.
std::vector<PipelineStep> parsePipeline(const std::string& text);
// The pipeline string of a level ("L0".."L5"); throws for levels not built yet.
std::string levelPipeline(const std::string& level);

// Runs each step; `after(flag, ir)` is called after every pass (for
// --print-ir-after). Throws CompileError with the pass's diagnostics.
// Appends each step but specialize-shapes to ir.pipeline.
void runPipeline(std::vector<PipelineStep>& steps, TrainingIR& ir,
                 const std::function<void(const std::string&, const TrainingIR&)>& after = {});

}  // namespace actnn
