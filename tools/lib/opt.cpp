#include "opt.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <torch/csrc/jit/ir/irparser.h>
#include <torch/csrc/jit/serialization/import.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <regex>
#include <sstream>
#include <unordered_map>

#include "actnn/actnn.h"
#include "actnn/passes/onnx_actnn_ops.h"
#include "actnn/passes/onnx_import.h"
#include "actnn/passes/onnx_text.h"
#include "actnn/passes/onnx_training.h"
#include "actnn/passes/registry.h"
#include "actnn/runtime/archive_check.h"
#include "args.h"
#include "output.h"
#include "saved_report.h"

namespace actnn {
namespace tools {
namespace {

std::string usage() {
  std::ostringstream out;
  out << "usage: actnn-opt [options] INPUT\n\n"
         "INPUT is a TorchScript archive (.pt), TorchScript graph text (.tsir), or an ONNX\n"
         "model (.onnx binary, .onnxtxt ONNX text syntax). An ONNX model is imported and\n"
         "compiled like a TorchScript one; an ONNX training graph (forward and backward in\n"
         "one graph, a gradient seed named <value>_grad, as ONNX Runtime's training artifacts)\n"
         "is rewritten in place: its saved values get com.actnn Quantize/Dequantize nodes\n"
         "(docs/onnx-actnn-ops.md) and it is written as ONNX (--emit=onnxtxt|onnx).\n\n";
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
  out << "\nONNX ops imported (default domain, opsets " << onnx::kMinOpset << "-" << onnx::kMaxOpset << "):\n ";
  size_t width = 1;
  for (const auto& op : onnx::supportedOps()) {
    if (width + op.size() + 1 > 88) {
      out << "\n ";
      width = 1;
    }
    out << " " << op;
    width += op.size() + 1;
  }
  out << "\n";
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

// LibTorch's loader and parser check what they read with internal
// assertions, whose message asks the user to report a bug to PyTorch. Raised
// while reading a user's file they mean the file is malformed: said so, with
// the check and where it is.
std::string libtorchMessage(const c10::Error& e) {
  static const std::regex assertion(
      R"re(^(.*) INTERNAL ASSERT FAILED at "([^"]*)":([0-9]+), please report a bug to PyTorch\.? ?)re");
  const std::string what = e.what_without_backtrace();
  std::smatch m;
  if (!std::regex_search(what, m, assertion)) return what;
  std::string file = m[2].str();
  file = file.substr(file.rfind('/') + 1);
  return "LibTorch's check '" + m[1].str() + "' failed (" + file + ":" + m[3].str() + ") reading it" +
         (m.suffix().length() ? ": " + m.suffix().str() : std::string());
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

// LibTorch's readers are not safe on hostile input: code or debug records
// of an archive can crash its loader, and some malformed graph text makes its
// parser loop forever (`annotate(List[a[b]()`: libFuzzer's finding). So
// actnn-opt runs the reader once in a child process first. A child whose
// reader throws sends the message through a pipe and exits with kChildThrew:
// even the message can be fatal (a TorchScript ErrorReport renders its source
// lazily in what(), from the debug records; a corrupted one throws there,
// inside a noexcept function: std::terminate), so the parent reports it
// without reading the input itself. Any other ending but 0 — a signal, a
// sanitizer's report and exit, or `seconds` passing (the child is killed) —
// is reported as `what` failing. Returns the reader's message when it
// refused the input, nothing when the child read it (or no child could be
// had: the caller's own read then runs unguarded).
std::optional<std::string> readInChildProcess(const std::string& what, int seconds,
                                              const std::function<void()>& reader) {
  constexpr int kChildThrew = 86;
  if (seconds == 0) return std::nullopt;
  int message[2];
  if (pipe(message) != 0) return std::nullopt;
  std::cout.flush();
  std::cerr.flush();
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(message[0]);
    close(message[1]);
    return std::nullopt;
  }
  if (pid == 0) {
    // The child never outlives its time or its parent (a parent killed while
    // waiting left a looping parser child behind).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(kChildThrew);
    signal(SIGALRM, SIG_DFL);
    alarm(static_cast<unsigned>(seconds) + 1);
    close(message[0]);
    const int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, STDERR_FILENO);
    std::string text;
    try {
      reader();
      _exit(0);
    } catch (const c10::Error& e) {
      text = libtorchMessage(e);
    } catch (const std::exception& e) {
      text = e.what();
    } catch (...) {
      text = "an exception that is not a std::exception";
    }
    for (size_t done = 0; done < text.size();) {
      const ssize_t n = write(message[1], text.data() + done, text.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    _exit(kChildThrew);
  }
  close(message[1]);
  std::string text;
  bool timed_out = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd ready{message[0], POLLIN, 0};
    const int polled = poll(&ready, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (polled == 0) {
      timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    if (polled < 0) {
      if (errno == EINTR) continue;
      break;
    }
    char buffer[4096];
    const ssize_t n = read(message[0], buffer, sizeof buffer);
    if (n > 0) text.append(buffer, static_cast<size_t>(n));
    else if (n == 0 || errno != EINTR) break;
  }
  close(message[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out)
    throw CompileError(what + " did not finish within " + std::to_string(seconds) +
                       " s in a child process (LibTorch's reader loops on some malformed input)");
  if (WIFSIGNALED(status))
    throw CompileError(what + " died of signal " + std::to_string(WTERMSIG(status)) + " (" +
                       strsignal(WTERMSIG(status)) + ") in a child process");
  if (WIFEXITED(status) && WEXITSTATUS(status) == kChildThrew) return text;
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
    throw CompileError(what + " ended with exit status " + std::to_string(WEXITSTATUS(status)) +
                       " in a child process");
  return std::nullopt;
}

// How long a child may read: far more than a real input takes (a ViT's
// graph text parses in well under a second; loading and saving resnet50 in
// a few seconds). ACTNN_READ_SECONDS overrides it (scripts/fuzz.sh: 10);
// 0 reads in the process itself, unguarded (the graph-text fuzz target: a
// fork per input cost it 99% of its speed). A value that is not a whole
// number of seconds is an error, not a silent default.
int readSeconds() {
  const char* env = std::getenv("ACTNN_READ_SECONDS");
  if (!env) return 120;
  char* end = nullptr;
  const long seconds = std::strtol(env, &end, 10);
  if (!*env || *end || seconds < 0 || seconds > 86400)
    throw UsageError(std::string("ACTNN_READ_SECONDS must be a whole number of seconds (0 to 86400), got '") + env +
                     "'");
  return static_cast<int>(seconds);
}

// Brackets of graph text, outside comments and string literals, must pair
// up: an unclosed one inside an attribute made LibTorch 1.13's parser loop
// forever (`annotate(List[a[b]()`). Found here at once, with its place.
void checkBrackets(const std::string& text, const std::string& path) {
  std::vector<std::pair<char, std::pair<int, int>>> open;  // bracket, (line, column)
  int line = 1, column = 0;
  auto where = [](std::pair<int, int> at) {
    return "line " + std::to_string(at.first) + ", column " + std::to_string(at.second);
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    ++column;
    if (c == '\n') {
      ++line;
      column = 0;
    } else if (c == '#') {
      while (i + 1 < text.size() && text[i + 1] != '\n') ++i;
    } else if (c == '"' || c == '\'') {
      while (i + 1 < text.size() && text[i + 1] != c && text[i + 1] != '\n') {
        if (text[i + 1] == '\\') ++i;
        ++i;
      }
      ++i;
    } else if (c == '(' || c == '[' || c == '{') {
      open.push_back({c, {line, column}});
    } else if (c == ')' || c == ']' || c == '}') {
      const char opener = c == ')' ? '(' : c == ']' ? '[' : '{';
      if (open.empty())
        throw CompileError(path + ": cannot parse TorchScript graph text: '" + std::string(1, c) + "' at " +
                           where({line, column}) + " closes no bracket");
      if (open.back().first != opener)
        throw CompileError(path + ": cannot parse TorchScript graph text: '" + std::string(1, c) + "' at " +
                           where({line, column}) + " does not close the '" + std::string(1, open.back().first) +
                           "' at " + where(open.back().second));
      open.pop_back();
    }
  }
  if (!open.empty())
    throw CompileError(path + ": cannot parse TorchScript graph text: the '" + std::string(1, open.back().first) +
                       "' at " + where(open.back().second) + " is never closed");
}

TrainingIR load(const std::string& path) {
  std::string text = readFile(path);
  bool archive = endsWith(path, ".pt") || (text.size() >= 2 && text[0] == 'P' && text[1] == 'K');
  if (archive) {
    try {
      checkArchive(path);
    } catch (const std::runtime_error& e) {
      throw CompileError(e.what());
    }
    // Loaded and saved again: a corrupted debug record crashed the writer.
    const auto refused = readInChildProcess(path + ": the archive is malformed: LibTorch's loader", readSeconds(), [&] {
      torch::jit::Module m = torch::jit::load(path);
      std::ostringstream sink;
      m.save(sink);
    });
    if (refused) throw CompileError(path + ": not a loadable TorchScript archive: " + *refused);
    try {
      return TrainingIR::fromModule(torch::jit::load(path));
    } catch (const c10::Error& e) {
      throw CompileError(path + ": not a loadable TorchScript archive: " + libtorchMessage(e));
    } catch (const CompileError&) {
      throw;
    } catch (const std::exception& e) {  // the TorchScript compiler's ErrorReport on archived code
      throw CompileError(path + ": not a loadable TorchScript archive: " + e.what());
    }
  }
  // The parser stops after the first graph: a second one would be dropped
  // without a word.
  std::vector<int> headers;
  std::istringstream lines(text);
  int number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++number;
    const size_t start = line.find_first_not_of(" \t");
    if (start != std::string::npos && line.compare(start, 6, "graph(") == 0) headers.push_back(number);
  }
  if (headers.size() > 1) {
    std::string where;
    for (int h : headers) where += (where.empty() ? "" : ", ") + std::to_string(h);
    throw CompileError(path + ": holds " + std::to_string(headers.size()) + " graphs (at lines " + where +
                       "); actnn-opt reads one graph per file");
  }
  checkBrackets(text, path);
  const std::string parse_what = path + ": cannot parse TorchScript graph text: LibTorch's parser";
  const auto refused = readInChildProcess(parse_what, readSeconds(), [&] {
    torch::jit::Graph scratch;
    torch::jit::parseIR(text, &scratch);
  });
  if (refused) throw CompileError(path + ": cannot parse TorchScript graph text: " + *refused);
  auto graph = std::make_shared<torch::jit::Graph>();
  try {
    torch::jit::parseIR(text, graph.get());
  } catch (const c10::Error& e) {  // the parser's message, not LibTorch's C++ backtrace
    throw CompileError(path + ": cannot parse TorchScript graph text: " + libtorchMessage(e));
  } catch (const std::exception& e) {
    throw CompileError(path + ": cannot parse TorchScript graph text: " + e.what());
  }
  return TrainingIR::fromGraph(graph);
}

// Writes `text` to -o FILE, or to `out` when there is none.
void writeText(const std::string& output, std::ostream& out, const std::string& text) {
  writeOutputOr(output, out, [&](std::ostream& os) { os << text; });
}

// The checker's context for checking a model's nodes one by one.
::onnx::checker::CheckerContext checkerContext(const ::onnx::ModelProto& model) {
  ::onnx::checker::CheckerContext ctx;
  ctx.set_ir_version(static_cast<int>(model.ir_version()));
  std::unordered_map<std::string, int> opsets;
  for (const auto& o : model.opset_import()) opsets[o.domain()] = static_cast<int>(o.version());
  ctx.set_opset_imports(opsets);
  return ctx;
}

// The nodes the rewrite inserted (named "<value>_actnn_..."), checked one by
// one: for models the ONNX checker rejects as a whole before the rewrite.
void checkInsertedNodes(const ::onnx::ModelProto& model, const std::string& input) {
  const ::onnx::checker::CheckerContext ctx = checkerContext(model);
  ::onnx::checker::LexicalScopeContext lex;
  for (const auto& node : model.graph().node()) {
    if (node.name().find("_actnn_") == std::string::npos) continue;
    try {
      ::onnx::checker::check_node(node, ctx, lex);
    } catch (const std::exception& e) {
      throw CompileError(input + ": the inserted node '" + node.name() + "' fails the ONNX checker: " + e.what());
    }
  }
}

// ONNX Runtime's training artifacts put its gradient ops (MaxPoolGrad, ...)
// in the default domain, where no onnx release registers them: the one
// objection of the checker a training graph may have.
bool isOrtGradientOp(const ::onnx::NodeProto& node) {
  return (node.domain().empty() || node.domain() == "ai.onnx") && endsWith(node.op_type(), "Grad");
}

constexpr const char* kOnlyOrtObjection =
    "a training graph is rewritten only when the checker's one objection is ONNX Runtime's gradient ops in the "
    "default domain";

// The checker stops at the first bad node: every node is checked here, and
// any objection but an unregistered ONNX Runtime gradient op refuses the
// graph before the rewrite (whose shape inference would run on it: a Scan
// without a body crashed libonnx's).
void checkNodesBesideOrtGradientOps(const ::onnx::ModelProto& model, const std::string& input,
                                    const std::string& problem) {
  bool known = false;
  for (const auto& node : model.graph().node())
    known = known || (isOrtGradientOp(node) &&
                      problem.find("No Op registered for " + node.op_type() + " with") != std::string::npos);
  if (!known)
    throw CompileError(problem + "\n(" + kOnlyOrtObjection + ")");
  const ::onnx::checker::CheckerContext ctx = checkerContext(model);
  ::onnx::checker::LexicalScopeContext lex;
  for (int index = 0; index < model.graph().node_size(); ++index) {
    const ::onnx::NodeProto& node = model.graph().node(index);
    try {
      ::onnx::checker::check_node(node, ctx, lex);
    } catch (const std::exception& e) {
      const std::string what = e.what();
      if (isOrtGradientOp(node) && what.find("No Op registered for " + node.op_type()) != std::string::npos)
        continue;
      throw CompileError(input + ": the ONNX checker rejects node " + std::to_string(index) + " '" + node.name() +
                         "' (op " + node.op_type() + "): " + what.substr(0, what.find('\n')) + "; " +
                         kOnlyOrtObjection);
    }
  }
}

// An ONNX training graph (forward and backward in one graph): quantize its
// saved values per --level and write the model (ONNX text, or binary with
// --emit=onnx) or the report.
int rewriteOnnxTraining(::onnx::ModelProto& model, const std::string& input, const Args& args, std::ostream& out,
                        std::ostream& err) {
  if (!args.str("passes").empty())
    throw UsageError("--passes names TorchScript passes; an ONNX training graph is rewritten per --level");
  if (args.str("print-ir-after-all") == "true" || !args.str("print-ir-after").empty() ||
      !args.str("input-shape").empty())
    throw UsageError("--print-ir-after(-all) and --input-shape apply to TorchScript pipelines, not to ONNX training graphs");
  // Written in the input's form unless --emit says otherwise: binary models
  // often have names the text syntax cannot hold ("/fc1/Gemm_output_0").
  const std::string output = args.str("output");
  std::string emit = args.str("emit");
  if (emit == "training") emit = endsWith(input, ".onnxtxt") ? "onnxtxt" : "onnx";
  if (emit != "onnx" && emit != "onnxtxt")
    throw UsageError("an ONNX training graph is written as --emit=onnx or --emit=onnxtxt, not '" + emit + "'");
  const bool report_only = !args.str("report").empty();
  if (emit == "onnx" && output.empty() && !report_only)
    throw UsageError("a binary ONNX model is written to a file: give -o FILE (or --emit=onnxtxt for text)");

  // The checker runs before and after. ONNX Runtime's artifacts fail the
  // checker already (they put MaxPoolGrad in the default domain, which no
  // onnx release registers); those are rewritten all the same, with a note,
  // and the nodes the rewrite inserted are checked one by one.
  registerActnnOnnxOps();
  std::string input_problem;
  try {
    onnx::checkModel(model, input);
  } catch (const onnx::ImportError& e) {
    input_problem = e.what();
    checkNodesBesideOrtGradientOps(model, input, input_problem);
  }
  const OnnxTrainingReport report = insertOnnxQuantize(model, onnxPolicyForLevel(args.str("level")));
  if (input_problem.empty()) {
    onnx::checkModel(model, input + " after the rewrite");
  } else {
    checkInsertedNodes(model, input);
    err << "actnn-opt: note: " << input_problem
        << "\nactnn-opt: note: the input fails the ONNX checker already; the inserted nodes were checked one by one\n";
  }

  const std::string format = args.str("report");
  if (!format.empty()) {
    if (format != "text" && format != "json") throw UsageError("--report expects text or json, got '" + format + "'");
    writeText(output, out, format == "json" ? formatOnnxTrainingReportJson(report) : formatOnnxTrainingReport(report));
    return 0;
  }
  if (emit == "onnx") {
    writeOutput(output, [&](std::ostream& os) {
      if (!model.SerializeToOstream(&os))
        throw OutputError("cannot write '" + output + "': the model does not serialize");
    });
    return 0;
  }
  writeText(output, out, onnxModelText(model));
  return 0;
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
      .flag("emit", "training",
            "module | forward | backward | training (F and B); for ONNX training graphs: onnx | onnxtxt")
      .option("print-ir-after-all", "false", "true", "print the IR after every pass (to stderr)")
      .flag("print-ir-after", "", "print the IR after this pass (to stderr)")
      .flag("output", "", "output file (-o); IR goes to stdout when absent")
      .option("report", "", "text", "print the saved set instead of IR: text | json (--report alone: text)")
      .flag("input-shape", "", "sizes (and dtypes, float32 by default) of the forward inputs: the level's pipeline is specialized to them (specialize-shapes), and --report runs F with them, e.g. x:8x3x224x224,ids:8x16:int64")
      .option("no-fallback", "false", "true",
              "refuse an op with no derivative rule (naming it) instead of running it under LibTorch autograd")
      .alias("-o", "output");
  try {
    if (!args.parse(argc, argv, 1)) {
      writeOutputOr("", out, [&](std::ostream& os) { os << usage() << "options:\n" << args.help() << passList(); });
      return 0;
    }
    const std::string input = args.str("INPUT");
    if (input.empty()) throw UsageError("no INPUT given");
    struct stat input_stat;
    if (::stat(input.c_str(), &input_stat) != 0)
      throw UsageError("cannot open input file '" + input + "': " + std::strerror(errno));
    if (S_ISDIR(input_stat.st_mode)) throw UsageError("INPUT '" + input + "' is a directory, not a model file");
    const std::string emit = args.str("emit");
    const bool onnx_emit = emit == "onnx" || emit == "onnxtxt";
    if (emit != "module" && emit != "forward" && emit != "backward" && emit != "training" && !onnx_emit)
      throw UsageError("--emit expects module, forward, backward, training, onnx or onnxtxt, got '" + emit + "'");
    const bool all = args.str("print-ir-after-all") == "true";
    const std::string after = args.str("print-ir-after");
    Options options;
    options.level = args.str("level");
    options.passes = args.str("passes");
    const auto shapes = parseInputShapes(args.str("input-shape"));
    setInputShapes(options, shapes);
    options.fallback = args.str("no-fallback") != "true";
    if (!options.fallback && !options.passes.empty())
      throw UsageError("--no-fallback applies to --level pipelines; with --passes write autodiff{fallback=false}");
    // A pass, option or level the registry does not know is a bad command
    // line (exit 2), found before any input is read.
    std::vector<PipelineStep> steps;
    try {
      if (!after.empty()) createPass(after);
      steps = parsePipeline(pipelineFor(options));
    } catch (const CompileError& e) {
      throw UsageError(e.what());
    }

    TrainingIR ir;
    if (onnx::isModelPath(input)) {
      // A model with a backward part (or --emit=onnx|onnxtxt) is an ONNX
      // training graph to rewrite in place; any other is imported.
      ::onnx::ModelProto model = onnx::readModel(input);
      if (onnx_emit || hasGradientSeed(model)) return rewriteOnnxTraining(model, input, args, out, err);
      onnx::checkModel(model, input);
      ir = TrainingIR::fromModule(onnx::importModel(model, input));
    } else {
      if (onnx_emit) throw UsageError("--emit=" + emit + " needs an ONNX training graph (.onnx, .onnxtxt) as INPUT");
      ir = load(input);
    }
    runPipeline(steps, ir, [&](const std::string& flag, const TrainingIR& current) {
      if (!all && flag != after) return;
      err << "// -----// IR Dump After " << flag << " //----- //\n";
      printIR(err, current, "training");
    });

    const std::string output = args.str("output");
    const std::string report = args.str("report");
    if (!report.empty()) {
      if (report != "text" && report != "json") throw UsageError("--report expects text or json, got '" + report + "'");
      const SavedReport rows = savedSetReport(ir, shapes);
      writeOutputOr(output, out, [&](std::ostream& os) { printReport(os, rows, report == "json"); });
      return 0;
    }
    if (emit == "module") {
      if (output.empty()) throw UsageError("--emit=module writes an archive; give -o FILE");
      if (!ir.module) throw UsageError("--emit=module needs a module input (.pt, .onnx, .onnxtxt), not graph text");
      // Into memory first: LibTorch's archive writer cannot report a failed
      // write (it throws from its destructor), writeOutput can.
      const torch::jit::Module trained = buildTrainingModule(ir);
      writeOutput(output, [&](std::ostream& os) { trained.save(os); });
      return 0;
    }
    writeOutputOr(output, out, [&](std::ostream& os) { printIR(os, ir, emit); });
    return 0;
  } catch (const UsageError& e) {
    // A pass's option check reads "error: <pass>: ..." already.
    const std::string what = e.what();
    err << "actnn-opt: " << (what.rfind("error: ", 0) == 0 ? "" : "error: ") << what << "\n";
    return 2;
  } catch (const OutputError& e) {
    err << "actnn-opt: error: " << e.what() << "\n";
    return 1;
  } catch (const InternalError& e) {
    err << "actnn-opt: " << e.what() << "\n";
    return 3;
  } catch (const CompileError& e) {
    // Pass diagnostics come as "error: <pass>: ..." lines already.
    const std::string what = e.what();
    err << "actnn-opt: " << (what.rfind("error: ", 0) == 0 ? "" : "error: ") << what << "\n";
    return 1;
  } catch (const c10::Error& e) {
    // Past the readers (which rephrase them) and the passes (InternalError),
    // a failed LibTorch assertion is a bug of ours, not the input's.
    const std::string what = e.what_without_backtrace();
    if (what.find("INTERNAL ASSERT FAILED") != std::string::npos) {
      err << "actnn-opt: internal error: a LibTorch assertion failed (a bug in actnn; please report it with the "
             "input): "
          << what.substr(0, what.find('\n')) << "\n";
      return 3;
    }
    err << "actnn-opt: error: " << what << "\n";
    return 1;
  } catch (const std::exception& e) {
    err << "actnn-opt: error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace tools
}  // namespace actnn
