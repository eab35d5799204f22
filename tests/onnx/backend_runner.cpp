// ONNX's own backend test data (Debian's libonnx-testdata) run through the
// ONNX importer: every case of the node, pytorch-converted and
// pytorch-operator suites whose ops are all supported is imported, run on each
// of its test_data_set_* inputs and compared with output_*.pb at the suite's
// tolerance (rtol 1e-3, atol 1e-7, as onnx.backend.test's runner). Cases are
// skipped, with the reason counted, when they use an op, opset, attribute
// value or input kind the importer does not implement, or when their outputs
// are random (training-mode dropout). Any other outcome is a failure.
//
// Many node tests feed what an op needs as a constant (Reshape's shape,
// Slice's starts, Clip's bounds, ...) as a graph input. The importer requires
// those operands to be known at import, so for such a case each data set's
// value of that input is bound into the model as an initializer before import
// (the case is specialized to its data, as an exporter with static shapes
// would have written it); the run counts as "bound" in the summary.
//
// Gradients too: for every passing case with a floating-point input or
// parameter, the imported model is compiled at L0 and one training step
// (loss = sum of outputs times fixed random probes) is compared with LibTorch
// autograd through the imported module itself (relative error <= 1e-4 per
// gradient, measured against at least 1% of the largest one). A case whose
// ops are not differentiable (integer arithmetic, comparisons) is counted as
// such, with the compiler's reason under --verbose.
//
//   onnx-backend-runner [--verbose] [--filter=SUBSTRING] DATA_DIR
//
// Prints one line per failure, then the counts; exits 1 if anything failed.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include <onnx/onnx_pb.h>
#include <ATen/ATen.h>
#include <torch/csrc/jit/api/module.h>

#include "actnn/actnn.h"
#include "actnn/passes/onnx_import.h"
#include "parity_util.h"

namespace fs = std::filesystem;

namespace {

constexpr double kRtol = 1e-3, kAtol = 1e-7;

struct Skip {
  std::string reason;
};

bool readTensor(const fs::path& file, at::Tensor& out) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  onnx::TensorProto proto;
  if (!in || !proto.ParseFromString(buffer.str())) return false;
  out = actnn::onnx::toTensor(proto, file.string());
  return true;
}

// "" when equal within tolerance, else what differs.
std::string compare(const at::Tensor& got, const at::Tensor& want) {
  if (got.sizes() != want.sizes()) {
    std::ostringstream s;
    s << "shape " << got.sizes() << " != expected " << want.sizes();
    return s.str();
  }
  if (got.scalar_type() != want.scalar_type())
    return std::string("dtype ") + c10::toString(got.scalar_type()) + " != expected " + c10::toString(want.scalar_type());
  if (!at::isFloatingType(want.scalar_type())) return got.equal(want) ? "" : "values differ (exact comparison)";
  at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  at::Tensor both_nan = g.isnan().logical_and(w.isnan());
  at::Tensor same_inf = g.isinf().logical_and(w.isinf()).logical_and(g.eq(w));
  at::Tensor close = (g - w).abs().le(kAtol + kRtol * w.abs()).logical_or(both_nan).logical_or(same_inf);
  if (close.all().item<bool>()) return "";
  at::Tensor err = ((g - w).abs() - kRtol * w.abs()).masked_fill(close, 0);
  std::ostringstream s;
  s << (close.numel() - close.sum().item<int64_t>()) << " of " << close.numel()
    << " values outside rtol 1e-3 / atol 1e-7 (worst excess " << err.max().item<double>() << ")";
  return s.str();
}

bool isRandom(const torch::jit::Module& m) {
  for (const auto* n : m.get_method("forward").graph()->nodes()) {
    const std::string kind = n->kind().toQualString();
    if (kind == "aten::dropout" || kind == "aten::native_dropout" || kind == "aten::bernoulli") return true;
  }
  return false;
}

constexpr double kGradTolerance = 1e-4, kGradFloor = 1e-2;

struct GradientCheck {
  bool checked = false;
  std::string not_differentiable;  // why not checked
};

// L0 gradients of the imported model against autograd through it; returns
// "" or what differs.
std::string checkGradients(const onnx::ModelProto& model, const std::vector<c10::IValue>& inputs,
                           const std::string& origin, GradientCheck& result) {
  std::vector<at::Tensor> tensors;
  bool differentiable_input = false;
  for (const auto& v : inputs) {
    tensors.push_back(v.toTensor());
    differentiable_input = differentiable_input || v.toTensor().is_floating_point();
  }
  torch::jit::Module reference = actnn::onnx::importModel(model, origin);
  if (!differentiable_input && reference.parameters().size() == 0) {
    result.not_differentiable = "no floating-point input or parameter";
    return "";
  }
  // Autograd's own verdict: an input it cannot differentiate for (batch
  // norm's running statistics as graph inputs), or outputs that depend on no
  // differentiable value (Shape): nothing to compare.
  try {
    std::vector<c10::IValue> args;
    for (const auto& t : tensors) args.emplace_back(t.is_floating_point() ? t.detach().requires_grad_() : t);
    c10::IValue out = reference.forward(args);
    bool any = false;
    for (const auto& v : out.isTuple() ? out.toTupleRef().elements().vec() : std::vector<c10::IValue>{out})
      any = any || (v.isTensor() && v.toTensor().requires_grad());
    if (!any) {
      result.not_differentiable = "no output depends on a differentiable value";
      return "";
    }
  } catch (const std::exception& e) {
    const std::string what = e.what();
    const auto pos = what.find("is not differentiable with respect to");
    if (pos == std::string::npos) throw;
    const auto start = what.rfind('\n', pos) + 1;
    result.not_differentiable = "autograd: " + what.substr(start, what.find('\n', pos) - start);
    return "";
  }
  torch::jit::Module compiled;
  try {
    actnn::Options options;
    options.level = "L0";
    compiled = actnn::compile(actnn::onnx::importModel(model, origin), options);
  } catch (const actnn::CompileError& e) {
    std::string what = e.what();
    result.not_differentiable = what.substr(0, what.find('\n'));
    return "";
  }
  const auto report = actnn::testing::compareTrainingStep(reference, compiled, tensors, 5, kGradFloor);
  result.checked = true;
  if (!report.problems.empty()) return "gradients: " + report.problems.front();
  if (report.worst > kGradTolerance) {
    std::ostringstream s;
    s << "gradients: relative error " << report.worst << " at " << report.worst_name;
    return s.str();
  }
  return "";
}

// Runs one case; returns "" on success, throws Skip to skip it. `bound`: a
// constant operand was bound from the test data.
std::string runCase(const fs::path& dir, bool& bound, GradientCheck& gradients) {
  // Not checked yet: a case with unsupported ops or opsets is skipped first.
  const onnx::ModelProto model = actnn::onnx::readModel((dir / "model.onnx").string());
  const int64_t opset = actnn::onnx::defaultOpset(model);
  for (const auto& node : model.graph().node()) {
    if (!node.domain().empty() && node.domain() != "ai.onnx") throw Skip{"domain " + node.domain()};
    if (!actnn::onnx::isSupportedOp(node.op_type())) throw Skip{"op " + node.op_type()};
  }
  if (opset < actnn::onnx::kMinOpset || opset > actnn::onnx::kMaxOpset)
    throw Skip{"opset " + std::to_string(opset)};
  std::vector<fs::path> sets;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory() && entry.path().filename().string().rfind("test_data_set_", 0) == 0)
      sets.push_back(entry.path());
  std::sort(sets.begin(), sets.end());
  if (sets.empty()) return "no test_data_set_* directory";
  // Graph inputs some node reads as a constant operand: bound per data set.
  std::set<std::string> constant_inputs;
  for (const auto& node : model.graph().node())
    for (int i = 0; i < node.input_size(); ++i)
      if (actnn::onnx::isConstantOperand(node.op_type(), i)) constant_inputs.insert(node.input(i));
  for (const auto& set : sets) {
    std::vector<c10::IValue> inputs;
    std::vector<at::Tensor> expected;
    // Inputs that are initializers too (IR < 4) are not forward() arguments.
    std::set<std::string> initializers;
    for (const auto& init : model.graph().initializer()) initializers.insert(init.name());
    onnx::ModelProto specialized = model;
    specialized.mutable_graph()->clear_input();
    int index = 0;
    for (const auto& in : model.graph().input()) {
      if (initializers.count(in.name())) {
        *specialized.mutable_graph()->add_input() = in;
        continue;
      }
      if (!in.type().has_tensor_type()) throw Skip{"non-tensor input"};
      const fs::path file = set / ("input_" + std::to_string(index++) + ".pb");
      if (constant_inputs.count(in.name())) {
        onnx::TensorProto* init = specialized.mutable_graph()->add_initializer();
        std::ifstream data(file, std::ios::binary);
        if (!data || !init->ParseFromIstream(&data)) return file.string() + " does not parse";
        init->set_name(in.name());
        bound = true;
        continue;
      }
      *specialized.mutable_graph()->add_input() = in;
      at::Tensor t;
      if (!readTensor(file, t)) throw Skip{"non-tensor input"};
      inputs.emplace_back(t);
    }
    torch::jit::Module m;
    try {
      actnn::onnx::checkModel(specialized, dir.string());
      m = actnn::onnx::importModel(specialized, dir.string());
    } catch (const actnn::onnx::UnsupportedError& e) {
      throw Skip{std::string("unsupported: ") + e.what()};
    }
    if (isRandom(m)) throw Skip{"random outputs (training-mode dropout)"};
    for (int i = 0; i < model.graph().output_size(); ++i) {
      if (!model.graph().output(i).type().has_tensor_type()) throw Skip{"non-tensor output"};
      at::Tensor t;
      if (!readTensor(set / ("output_" + std::to_string(i) + ".pb"), t)) throw Skip{"non-tensor output"};
      expected.push_back(t);
    }
    c10::IValue result;
    {
      at::NoGradGuard no_grad;
      result = m.forward(inputs);
    }
    std::vector<at::Tensor> got;
    if (result.isTuple()) {
      for (const auto& v : result.toTupleRef().elements()) got.push_back(v.toTensor());
    } else {
      got.push_back(result.toTensor());
    }
    if (got.size() != expected.size())
      return set.filename().string() + ": " + std::to_string(got.size()) + " outputs, expected " +
             std::to_string(expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      std::string diff = compare(got[i], expected[i]);
      if (!diff.empty()) return set.filename().string() + " output " + std::to_string(i) + ": " + diff;
    }
    if (set == sets.front()) {
      std::string diff = checkGradients(specialized, inputs, dir.string(), gradients);
      if (!diff.empty()) return set.filename().string() + ": " + diff;
    }
  }
  return "";
}

std::string shortReason(const std::string& reason) {
  // "unsupported: <file>: node 0 (op X, ...): message" -> "unsupported: message"
  const auto pos = reason.rfind("): ");
  if (reason.rfind("unsupported: ", 0) == 0 && pos != std::string::npos) return "unsupported: " + reason.substr(pos + 3);
  return reason;
}

}  // namespace

int main(int argc, char** argv) {
  bool verbose = false;
  std::string filter, root;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--verbose") verbose = true;
    else if (a.rfind("--filter=", 0) == 0) filter = a.substr(9);
    else root = a;
  }
  if (root.empty() || !fs::is_directory(root)) {
    std::cerr << "usage: onnx-backend-runner [--verbose] [--filter=SUBSTRING] DATA_DIR\n"
                 "  DATA_DIR: onnx/backend/test/data of libonnx-testdata (node/, pytorch-converted/, ...)\n";
    return 2;
  }
  int passed = 0, failed = 0, skipped = 0, bound_cases = 0, grad_checked = 0, grad_not_differentiable = 0;
  std::map<std::string, int> grad_reasons;
  std::map<std::string, int> reasons;
  for (const char* suite : {"node", "pytorch-converted", "pytorch-operator"}) {
    std::vector<fs::path> cases;
    for (const auto& entry : fs::directory_iterator(fs::path(root) / suite))
      if (fs::exists(entry.path() / "model.onnx")) cases.push_back(entry.path());
    std::sort(cases.begin(), cases.end());
    for (const auto& dir : cases) {
      const std::string name = std::string(suite) + "/" + dir.filename().string();
      if (!filter.empty() && name.find(filter) == std::string::npos) continue;
      std::string outcome;
      bool bound = false;
      GradientCheck gradients;
      try {
        outcome = runCase(dir, bound, gradients);
      } catch (const Skip& s) {
        ++skipped;
        ++reasons[shortReason(s.reason)];
        if (verbose) std::cout << "SKIP " << name << ": " << s.reason << "\n";
        continue;
      } catch (const actnn::onnx::UnsupportedError& e) {
        // An element type of the test data (bfloat16 stored as UINT16, ...).
        ++skipped;
        ++reasons[shortReason(std::string("unsupported: ") + e.what())];
        if (verbose) std::cout << "SKIP " << name << ": " << e.what() << "\n";
        continue;
      } catch (const c10::Error& e) {
        outcome = e.what_without_backtrace();
      } catch (const std::exception& e) {
        outcome = e.what();
      }
      if (outcome.empty()) {
        ++passed;
        bound_cases += bound;
        grad_checked += gradients.checked;
        if (!gradients.not_differentiable.empty()) {
          ++grad_not_differentiable;
          const auto pos = gradients.not_differentiable.find("no derivative rule for ");
          ++grad_reasons[pos == std::string::npos ? gradients.not_differentiable
                                                   : gradients.not_differentiable.substr(pos)];
        }
        if (verbose) std::cout << "PASS " << name << "\n";
      } else {
        ++failed;
        std::cout << "FAIL " << name << ": " << outcome << "\n";
      }
    }
  }
  if (verbose) {
    std::cout << "skip reasons:\n";
    for (const auto& r : reasons) std::cout << "  " << r.second << "  " << r.first << "\n";
    std::cout << "gradients not checked, why:\n";
    for (const auto& r : grad_reasons) std::cout << "  " << r.second << "  " << r.first << "\n";
  }
  std::cout << "onnx backend test data: " << passed << " passed (" << bound_cases
            << " with constant operands bound from the test data), " << failed << " failed, " << skipped
            << " skipped-unsupported\n"
            << "gradients (L0 vs autograd) of the passing cases: " << grad_checked << " equal, "
            << grad_not_differentiable << " not differentiable\n";
  return failed == 0 ? 0 : 1;
}
