#include "parity_util.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <map>

namespace actnn {
namespace testing {
namespace {

struct Step {
  at::Tensor loss;
  std::map<std::string, at::Tensor> grads, buffers;
  std::vector<at::Tensor> input_grads;
};

Step runStep(torch::jit::Module& m, const std::vector<at::Tensor>& inputs, uint64_t seed) {
  std::vector<at::Tensor> xs;
  std::vector<c10::IValue> args;
  for (const auto& x : inputs) {
    xs.push_back(x.detach().clone().requires_grad_(x.is_floating_point()));
    args.emplace_back(xs.back());
  }
  for (const auto& p : m.parameters()) p.mutable_grad() = at::Tensor();
  at::manual_seed(seed);
  c10::IValue result = m.forward(args);
  std::vector<at::Tensor> outs;
  flattenTensors(result, outs);
  // A fixed probe per output makes every output element's gradient distinct.
  at::manual_seed(seed + 1);
  at::Tensor loss = at::zeros({}, at::kFloat);
  for (const auto& o : outs)
    if (o.is_floating_point()) loss = loss + (o * at::randn(o.sizes(), o.options().requires_grad(false))).sum();
  loss.backward();
  Step step;
  step.loss = loss.detach();
  for (const auto& p : m.named_parameters()) step.grads[p.name] = p.value.grad();
  for (const auto& b : m.named_buffers()) step.buffers[b.name] = b.value.detach().clone();
  for (const auto& x : xs) step.input_grads.push_back(x.grad());
  return step;
}

}  // namespace

void flattenTensors(const c10::IValue& v, std::vector<at::Tensor>& out) {
  if (v.isTensor()) {
    out.push_back(v.toTensor());
  } else if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) flattenTensors(e, out);
  } else if (v.isList()) {
    for (const auto& e : v.toListRef()) flattenTensors(e, out);
  } else if (v.isGenericDict()) {
    for (const auto& e : v.toGenericDict()) flattenTensors(e.value(), out);
  }
}

double relativeError(const at::Tensor& actual, const at::Tensor& expected, double min_scale) {
  if (expected.numel() == 0) return 0;
  auto a = actual.to(at::kDouble), e = expected.to(at::kDouble);
  double scale = std::max(e.abs().max().item<double>(), min_scale);
  double diff = (a - e).abs().max().item<double>();
  if (scale == 0) return diff;
  return diff / scale;
}

ParityReport compareTrainingStep(torch::jit::Module& reference, torch::jit::Module& compiled,
                                 const std::vector<at::Tensor>& inputs, uint64_t seed, double floor) {
  Step ref = runStep(reference, inputs, seed);
  Step got = runStep(compiled, inputs, seed);
  ParityReport report;
  double grad_floor = 0, buffer_floor = 0;
  for (const auto& g : ref.grads)
    if (g.second.defined() && g.second.numel() > 0)
      grad_floor = std::max(grad_floor, floor * g.second.abs().max().item<double>());
  for (const auto& b : ref.buffers)
    if (b.second.is_floating_point() && b.second.numel() > 0)
      buffer_floor = std::max(buffer_floor, floor * b.second.abs().max().item<double>());
  auto check = [&](const std::string& name, const at::Tensor& a, const at::Tensor& e) {
    if (!e.defined() && !a.defined()) return;
    if (!e.defined() || !a.defined()) {
      report.problems.push_back(name + (a.defined() ? ": reference has no gradient" : ": no gradient"));
      return;
    }
    if (a.sizes() != e.sizes()) {
      report.problems.push_back(name + ": shape differs");
      return;
    }
    const double min_scale = name.rfind("grad ", 0) == 0 ? grad_floor : name.rfind("buffer ", 0) == 0 ? buffer_floor : 0;
    double err = relativeError(a, e, min_scale);
    if (err > report.worst || report.worst_name.empty()) {
      report.worst = std::max(report.worst, err);
      if (err >= report.worst) report.worst_name = name;
    }
  };
  check("loss", got.loss, ref.loss);
  for (const auto& g : ref.grads) {
    auto it = got.grads.find(g.first);
    if (it == got.grads.end()) {
      report.problems.push_back(g.first + ": missing in the compiled module");
      continue;
    }
    check("grad " + g.first, it->second, g.second);
  }
  for (const auto& b : ref.buffers) {
    auto it = got.buffers.find(b.first);
    if (it == got.buffers.end()) {
      report.problems.push_back(b.first + ": buffer missing in the compiled module");
      continue;
    }
    check("buffer " + b.first, it->second, b.second);
  }
  for (size_t i = 0; i < ref.input_grads.size(); ++i)
    check("grad input" + std::to_string(i), got.input_grads[i], ref.input_grads[i]);
  return report;
}

}  // namespace testing
}  // namespace actnn
