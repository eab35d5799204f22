#include "opt.h"

#include <onnx/onnx_pb.h>
#include <torch/csrc/jit/ir/irparser.h>
#include <torch/csrc/jit/serialization/import.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "actnn/actnn.h"
#include "actnn/passes/onnx_import.h"
#include "actnn/passes/registry.h"
#include "args.h"
#include "saved_report.h"

namespace actnn {
namespace tools {
namespace {

std::string usage() {
  std::ostringstream out;
  out << "usage: actnn-opt [options] INPUT\n\n"
         "INPUT is a TorchScript archive (.pt), TorchScript graph text (.tsir), or an ONNX\n"
         "model (.onnx binary, .onnxtxt ONNX text syntax).\n\n";
  return out.str();
}

std::string passList() {
  std::ostringstream out;
  out << "\npasses (--passes=a,b{option=value}):\n";
  for (const auto& info : registeredPasses()) {
    out << "  " << info.flag << "\n      " << info.summary << "\n";
    auto pass = info.create();
    for (const auto& line : pass->options().describe()) out << "      {" << line << "}\n";
  }
  out << "\nlevels (--level):\n";
  for (const char* level : {"L0", "L1", "L2", "L3", "L4", "L5"}) {
    try {
      out << "  " << level << " = " << levelPipeline(level) << "\n";
    } catch (const CompileError&) {
      out << "  " << level << " (not built yet)\n";
    }
  }
  return out.str();
}

bool endsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("cannot open input file '" + path + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TrainingIR load(const std::string& path) {
  if (endsWith(path, ".onnx") || endsWith(path, ".onnxtxt"))
    return TrainingIR::fromModule(onnx::importModel(onnx::loadModel(path), path));
  std::string text = readFile(path);
  bool archive = endsWith(path, ".pt") || (text.size() >= 2 && text[0] == 'P' && text[1] == 'K');
  if (archive) {
    try {
      return TrainingIR::fromModule(torch::jit::load(path));
    } catch (const c10::Error& e) {
      throw CompileError(path + ": not a loadable TorchScript archive: " + e.what_without_backtrace());
    }
  }
  auto graph = std::make_shared<torch::jit::Graph>();
  try {
    torch::jit::parseIR(text, graph.get());
  } catch (const std::exception& e) {
    throw CompileError(path + ": cannot parse TorchScript graph text: " + e.what());
  }
  return TrainingIR::fromGraph(graph);
}

void printIR(std::ostream& os, const TrainingIR& ir, const std::string& emit) {
  if (!ir.forward) {
    if (emit == "backward") throw CompileError("--emit=backward needs the autodiff pass");
    os << *ir.graph;
    return;
  }
  if (emit == "forward" || emit == "training") os << "# actnn: forward\n" << *ir.forward;
  if (emit == "backward" || emit == "training") os << "# actnn: backward\n" << *ir.backward;
}

}  // namespace

int optMain(int argc, char** argv, std::ostream& out, std::ostream& err) {
  Args args;
  args.positional("INPUT", "a TorchScript archive (.pt), graph text (.tsir) or ONNX model (.onnx, .onnxtxt)")
      .flag("level", "L3", "the named pipeline to run (L0..L5)")
      .flag("passes", "", "an explicit pipeline, e.g. lower-module,canonicalize{shape-checks=remove}")
      .flag("emit", "training", "module | forward | backward | training (F and B)")
      .option("print-ir-after-all", "false", "true", "print the IR after every pass (to stderr)")
      .flag("print-ir-after", "", "print the IR after this pass (to stderr)")
      .flag("output", "", "output file (-o); IR goes to stdout when absent")
      .option("report", "", "text", "print the saved set instead of IR: text | json (--report alone: text)")
      .flag("input-shape", "", "shapes of the forward inputs for --report, e.g. x:8x3x224x224,y:8x10")
      .alias("-o", "output");
  try {
    if (!args.parse(argc, argv, 1)) {
      out << usage() << "options:\n" << args.help() << passList();
      return 0;
    }
    const std::string input = args.str("INPUT");
    if (input.empty()) throw UsageError("no INPUT given");
    const std::string emit = args.str("emit");
    if (emit != "module" && emit != "forward" && emit != "backward" && emit != "training")
      throw UsageError("--emit expects module, forward, backward or training, got '" + emit + "'");
    const bool all = args.str("print-ir-after-all") == "true";
    const std::string after = args.str("print-ir-after");
    if (!after.empty()) createPass(after);  // names an existing pass

    TrainingIR ir = load(input);
    Options options;
    options.level = args.str("level");
    options.passes = args.str("passes");
    auto steps = parsePipeline(pipelineFor(options));
    runPipeline(steps, ir, [&](const std::string& flag, const TrainingIR& current) {
      if (!all && flag != after) return;
      err << "// -----// IR Dump After " << flag << " //----- //\n";
      printIR(err, current, "training");
    });

    const std::string output = args.str("output");
    const std::string report = args.str("report");
    if (!report.empty()) {
      if (report != "text" && report != "json") throw UsageError("--report expects text or json, got '" + report + "'");
      const SavedReport rows = savedSetReport(ir, parseInputShapes(args.str("input-shape")));
      if (output.empty()) {
        printReport(out, rows, report == "json");
      } else {
        std::ofstream file(output);
        if (!file) throw UsageError("cannot write '" + output + "'");
        printReport(file, rows, report == "json");
      }
      return 0;
    }
    if (emit == "module") {
      if (output.empty()) throw UsageError("--emit=module writes an archive; give -o FILE");
      if (!ir.module) throw UsageError("--emit=module needs a module input (.pt, .onnx, .onnxtxt), not graph text");
      buildTrainingModule(ir).save(output);
      return 0;
    }
    if (output.empty()) {
      printIR(out, ir, emit);
    } else {
      std::ofstream file(output);
      if (!file) throw UsageError("cannot write '" + output + "'");
      printIR(file, ir, emit);
    }
    return 0;
  } catch (const UsageError& e) {
    err << "actnn-opt: error: " << e.what() << "\n";
    return 2;
  } catch (const CompileError& e) {
    // Pass diagnostics come as "error: <pass>: ..." lines already.
    const std::string what = e.what();
    err << "actnn-opt: " << (what.rfind("error: ", 0) == 0 ? "" : "error: ") << what << "\n";
    return 1;
  } catch (const c10::Error& e) {
    err << "actnn-opt: error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    err << "actnn-opt: error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace tools
}  // namespace actnn
