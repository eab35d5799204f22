// ONNX import parity: torchvision models exported by
// torch.onnx.export(..., training=TrainingMode.TRAINING) at test time
// (tests/models/export_onnx.py, random weights), imported, compiled at L0 and
// trained one step, give the same loss, parameter gradients, input gradient
// and batch-norm running statistics as LibTorch autograd on the scripted
// original with the same weights (relative error <= 1e-5, fp32, see below).
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/import.h>

#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include "actnn/actnn.h"
#include "actnn/passes/onnx_import.h"
#include "parity_util.h"

namespace {

std::string path(const std::string& name, const std::string& suffix) {
  return std::string(ACTNN_TEST_MODELS_DIR) + "/onnx/" + name + suffix;
}

class OnnxParity : public ::testing::TestWithParam<const char*> {};

TEST_P(OnnxParity, ImportedGradientsEqualAutogradOnTheScriptedModule) {
  const std::string name = GetParam();
  torch::jit::Module reference = torch::jit::load(path(name, ".ref.pt"));
  torch::jit::Module imported = actnn::onnx::importModel(actnn::onnx::loadModel(path(name, ".onnx")), name);

  // The same weights under the same names (the exporter keeps state_dict keys).
  std::map<std::string, at::Tensor> params;
  for (const auto& p : imported.named_parameters()) params[p.name] = p.value;
  size_t count = 0;
  for (const auto& p : reference.named_parameters()) {
    ++count;
    auto it = params.find(p.name);
    ASSERT_NE(it, params.end()) << p.name << " was not imported as a parameter";
    EXPECT_TRUE(it->second.equal(p.value)) << p.name;
  }
  EXPECT_EQ(params.size(), count);
  std::map<std::string, at::Tensor> buffers;
  for (const auto& b : imported.named_buffers()) buffers[b.name] = b.value;
  for (const auto& b : reference.named_buffers()) {
    if (b.name.find("num_batches_tracked") != std::string::npos) continue;
    auto it = buffers.find(b.name);
    ASSERT_NE(it, buffers.end()) << b.name << " was not imported as a buffer";
    EXPECT_TRUE(it->second.equal(b.value)) << b.name;
  }

  actnn::Options options;
  options.level = "L0";
  torch::jit::Module compiled = actnn::compile(imported, options);
  at::manual_seed(0);
  at::Tensor x = at::randn({2, 3, 64, 64});
  // The import computes the same function with other ops (mean for
  // adaptive_avg_pool2d, ...), so values that are zero in exact arithmetic
  // (gradients of biases before batch norm, running means after a normalized
  // input) are fp32 rounding noise on both sides (measured: 5e-8 of the
  // largest gradient on mobilenet_v2). Errors are measured against at least
  // 1% of the largest gradient (buffer value): with the 1e-5 bound, an
  // absolute tolerance of 1e-7 of it for tensors that small.
  auto report = actnn::testing::compareTrainingStep(reference, compiled, {x}, 7, 1e-2);
  for (const auto& p : report.problems) {
    // ONNX has no num_batches_tracked (it only matters for momentum=None).
    if (p.find("num_batches_tracked") != std::string::npos) continue;
    ADD_FAILURE() << p;
  }
  // Measured: squeezenet1_0 0 (bit-identical), resnet18 2e-7, mobilenet_v2
  // 1.2e-5 under LibTorch 1.13 and 6.2e-5 under 2.15 (other fp32 kernels);
  // the scripted-module parity test's 1e-5 is for identical graphs, these
  // are re-derived from ONNX. That the difference is fp32 rounding, not
  // another function, the same step in float64 shows below.
  EXPECT_LE(report.worst, 1e-4) << "worst: " << report.worst_name;
  std::cout << name << ": worst relative error " << report.worst << " (" << report.worst_name << ")\n";

  // float64: what remains is the ONNX attributes' float32 rounding (batch
  // norm's epsilon 1e-5 is stored as 9.99999975e-6, 2.5e-8 off; measured on
  // mobilenet_v2 under 2.15: 2.3e-8).
  // Fresh copies: the step above moved the running statistics apart by fp32
  // rounding.
  torch::jit::Module reference64 = torch::jit::load(path(name, ".ref.pt"));
  torch::jit::Module compiled64 =
      actnn::compile(actnn::onnx::importModel(actnn::onnx::loadModel(path(name, ".onnx")), name), options);
  reference64.to(at::kDouble);
  compiled64.to(at::kDouble);
  auto exact = actnn::testing::compareTrainingStep(reference64, compiled64, {x.to(at::kDouble)}, 7, 1e-2);
  for (const auto& p : exact.problems)
    if (p.find("num_batches_tracked") == std::string::npos) ADD_FAILURE() << "float64: " << p;
  EXPECT_LE(exact.worst, 1e-6) << "float64 worst: " << exact.worst_name;
  std::cout << name << ": float64 worst relative error " << exact.worst << " (" << exact.worst_name << ")\n";
}

INSTANTIATE_TEST_SUITE_P(Torchvision, OnnxParity,
                         ::testing::Values("resnet18", "mobilenet_v2", "squeezenet1_0", "vit_b_16"));

}  // namespace
