// The compiler as TorchScript ops, for the Python package (python/actnn):
// libactnn.so registers them, `import actnn` loads it.
//
//   actnn::compile(Any module, Dict(str, str) options) -> Any
//       actnn::compile (passes/compile.cpp) of a scripted module's object;
//       returns the compiled module's object (torch._C.ScriptModule in
//       Python), which shares the original's parameters and buffers.
//   actnn::report(Any module, Dict(str, str) options) -> str
//       the saved-set report of actnn-opt --report=json for the module
//       compiled with `options`, for input_shapes.
//
// Options, all strings (the Python wrapper converts): level (L0..L5),
// passes (an explicit pipeline), input_shapes ("x:8x3x32x32,ids:8x16:int64",
// actnn-opt's --input-shape), fallback ("true" | "false"). An unknown key,
// a bad value or a module that does not compile raises with the compiler's
// message (the op, node and source line); Python sees a RuntimeError.
#include <torch/library.h>

#include <sstream>

#include "actnn/actnn.h"
#include "args.h"
#include "saved_report.h"

namespace actnn {
namespace {

using OptionMap = c10::Dict<std::string, std::string>;

struct Parsed {
  Options options;
  std::map<std::string, tools::InputShape> shapes;
};

Parsed parseOptions(const OptionMap& map, const char* op) {
  Parsed p;
  for (const auto& entry : map) {
    const std::string& key = entry.key();
    const std::string& value = entry.value();
    if (key == "level") {
      p.options.level = value;
    } else if (key == "passes") {
      p.options.passes = value;
    } else if (key == "input_shapes") {
      try {
        p.shapes = tools::parseInputShapes(value);
      } catch (const tools::UsageError& e) {
        TORCH_CHECK(false, op, ": input_shapes: ", e.what());
      }
      tools::setInputShapes(p.options, p.shapes);
    } else if (key == "fallback") {
      TORCH_CHECK(value == "true" || value == "false", op, ": option fallback must be true or false, got '", value,
                  "'");
      p.options.fallback = value == "true";
    } else {
      TORCH_CHECK(false, op, ": unknown option '", key, "' (options: level, passes, input_shapes, fallback)");
    }
  }
  TORCH_CHECK(p.options.fallback || p.options.passes.empty(), op,
              ": fallback=false applies to levels; with passes write autodiff{fallback=false}");
  return p;
}

torch::jit::Module moduleOf(const c10::IValue& value, const char* op) {
  TORCH_CHECK(value.isObject() && value.toObject()->type()->is_module(), op,
              " expects a scripted module (torch.jit.ScriptModule's _c), got ", value.tagKind());
  return torch::jit::Module(value.toObject());
}

// Every exception leaves as a c10::Error (one as it is; any other, such as
// CompileError, with the op's name in front of its message): Python sees a
// RuntimeError, which the package turns into actnn.CompileError.
template <typename F>
auto reportingErrors(const char* op, F&& f) {
  try {
    return f();
  } catch (const c10::Error&) {
    throw;
  } catch (const std::exception& e) {
    TORCH_CHECK(false, op, ": ", e.what());
  }
}

c10::IValue compileOp(const c10::IValue& module, const OptionMap& options) {
  return reportingErrors("actnn::compile", [&] {
    const Parsed p = parseOptions(options, "actnn::compile");
    return c10::IValue(compile(moduleOf(module, "actnn::compile"), p.options)._ivalue());
  });
}

std::string reportOp(const c10::IValue& module, const OptionMap& options) {
  return reportingErrors("actnn::report", [&] {
    const Parsed p = parseOptions(options, "actnn::report");
    // A copy: running F for the report updates batch norms' running statistics.
    TrainingIR ir = TrainingIR::fromModule(moduleOf(module, "actnn::report").clone());
    runPipelineText(pipelineFor(p.options), ir);
    std::ostringstream out;
    tools::printReport(out, tools::savedSetReport(ir, p.shapes), /*json=*/true);
    return out.str();
  });
}

TORCH_LIBRARY_FRAGMENT(actnn, m) {
  m.def("compile(Any module, Dict(str, str) options) -> Any", compileOp);
  m.def("report(Any module, Dict(str, str) options) -> str", reportOp);
}

}  // namespace
}  // namespace actnn
