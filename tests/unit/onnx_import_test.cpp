// The ONNX importer's module: which initializers become parameters, buffers
// or constants, batch norm's running statistics, and the input-shape check a
// model gets only when its Shape ops were evaluated at import.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include "actnn/passes/onnx_import.h"

namespace {

torch::jit::Module import(const char* text) {
  return actnn::onnx::importModel(actnn::onnx::parseModelText(text, "test"), "test");
}

// BatchNormalization with its running statistics, a weight read as data, a
// rank-0 scale, an int64 shape.
const char* kNet = R"(
<ir_version: 8, opset_import: ["" : 14]>
net (float[2,2,4,4] x) => (float[2,32] y)
  <float[2,2,1,1] conv_w = {1.0, 0.5, -0.5, 1.0}, float[2] bn_w = {1.0, 1.0}, float[2] bn_b = {0.0, 0.0},
   float[2] bn_mean = {0.0, 0.0}, float[2] bn_var = {1.0, 1.0}, float scale = {0.5}>
{
  c = Conv(x, conv_w)
  b, rm, rv = BatchNormalization<training_mode = 1>(c, bn_w, bn_b, bn_mean, bn_var)
  s = Mul(b, scale)
  shape = Shape(s)
  zero = Constant<value = int64[1] {0}>()
  n = Gather<axis = 0>(shape, zero)
  m1 = Constant<value = int64[1] {-1}>()
  target = Concat<axis = 0>(n, m1)
  y = Reshape(s, target)
}
)";

TEST(OnnxImport, InitializersBecomeParametersBuffersOrConstants) {
  torch::jit::Module m = import(kNet);
  std::set<std::string> params, buffers;
  for (const auto& p : m.named_parameters()) {
    params.insert(p.name);
    EXPECT_TRUE(p.value.requires_grad()) << p.name;
  }
  for (const auto& b : m.named_buffers()) buffers.insert(b.name);
  EXPECT_EQ(params, (std::set<std::string>{"conv_w", "bn_w", "bn_b"}));  // not the rank-0 scale
  EXPECT_EQ(buffers, (std::set<std::string>{"bn_mean", "bn_var"}));

  // The running statistics move as torch.nn.BatchNorm's do (momentum 0.1).
  at::manual_seed(0);
  at::Tensor x = at::randn({2, 2, 4, 4});
  at::Tensor y = m.forward({x}).toTensor();
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 32}));
  at::Tensor c = at::conv2d(x, m.attr("conv_w").toTensor());
  EXPECT_TRUE(at::allclose(m.attr("bn_mean").toTensor(), 0.1 * c.mean({0, 2, 3}), 1e-5, 1e-6));

  // Shape was evaluated at import: another batch size is refused by name.
  try {
    m.forward({at::randn({3, 2, 4, 4})});
    ADD_FAILURE() << "a batch of 3 ran";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("imported for input 'x' of shape 2x2x4x4"), std::string::npos) << e.what();
  }
}

TEST(OnnxImport, WithoutShapeOpsAnyBatchSizeRuns) {
  torch::jit::Module m = import(R"(
<ir_version: 8, opset_import: ["" : 14]>
net (float[3,4] x) => (float[3,2] y)
  <float[2,4] fc_weight = {1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0}, float[2] fc_bias = {0.5, -0.5}>
{
  y = Gemm<transB = 1>(x, fc_weight, fc_bias)
}
)");
  // No Shape ops: any batch size runs.
  EXPECT_EQ(m.forward({at::randn({5, 4})}).toTensor().sizes(), (std::vector<int64_t>{5, 2}));
}

}  // namespace
