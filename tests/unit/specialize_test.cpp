// Shape specialization (specialize-shapes, Options::input_shapes): a module
// whose forward branches on its input's rank and sizes compiles once the
// sizes are given, its gradients equal LibTorch autograd's, and the compiled
// module (also after save and load) refuses other sizes with a message naming
// the input and both shapes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/import.h>

#include <sstream>

#include "actnn/actnn.h"
#include "parity_util.h"
#include "test_util.h"

namespace {

// Rank check (interpolate's dispatch), then padding to a multiple of 4 when
// the last size is not one (Swin's window padding).
torch::jit::Module shapeNet() {
  torch::jit::Module m("ShapeNet");
  m.register_attribute("training", c10::BoolType::get(), true);  // what a scripted nn.Module has
  at::manual_seed(3);
  m.register_parameter("w", (at::randn({4, 3, 3, 3}) * 0.3).requires_grad_(), false);
  m.register_parameter("v", at::randn({4}).requires_grad_(), false);
  m.define(R"JIT(
def forward(self, x):
    assert x.dim() == 4
    y = torch.conv2d(x, self.w, None, [1, 1], [1, 1])
    if y.size(-1) % 4 != 0:
        y = torch.constant_pad_nd(y, [0, 4 - y.size(-1) % 4], 0.)
    return torch.tanh(y) * self.v.view([1, 4, 1, 1])
)JIT");
  return m;
}

actnn::Options specialized(const std::string& level, std::vector<int64_t> sizes) {
  actnn::Options o;
  o.level = level;
  o.input_shapes = {{"x", std::move(sizes)}};
  return o;
}

void expectParity(const actnn::testing::ParityReport& r) {
  for (const auto& p : r.problems) ADD_FAILURE() << p;
  EXPECT_LE(r.worst, 1e-6) << "worst: " << r.worst_name;
}

// Without input shapes the size-dependent branch stays a prim::If: with the
// autograd fallback off it is refused; with it on, the branch runs under
// autograd, so one compiled module (and its saved archive) serves both sizes.
TEST(SpecializeShapes, WithoutShapesTheBranchesRunUnderTheFallback) {
  actnn::Options strict;
  strict.level = "L0";
  strict.fallback = false;
  actnn::test::expect_error([&] { actnn::compile(shapeNet(), strict); },
                            "prim::If produces tensors from values that require grad");
  actnn::Options o;
  o.level = "L0";
  torch::jit::Module compiled = actnn::compile(shapeNet(), o);
  std::stringstream archive;
  compiled.save(archive);
  torch::jit::Module loaded = torch::jit::load(archive);
  for (torch::jit::Module* m : {&compiled, &loaded}) {
    for (int64_t size : {7, 8}) {
      torch::jit::Module reference = shapeNet();
      expectParity(actnn::testing::compareTrainingStep(reference, *m, {at::randn({2, 3, size, size})}, 5));
    }
  }
}

TEST(SpecializeShapes, GradientsEqualAutogradForEachSpecialization) {
  // 7x7 takes the padding branch, 8x8 does not: two compiles, two programs.
  for (int64_t size : {7, 8}) {
    torch::jit::Module reference = shapeNet();
    torch::jit::Module compiled = actnn::compile(shapeNet(), specialized("L0", {2, 3, size, size}));
    expectParity(actnn::testing::compareTrainingStep(reference, compiled, {at::randn({2, 3, size, size})}, 5));
  }
}

TEST(SpecializeShapes, OtherSizesAreRefusedAfterSaveAndLoadToo) {
  torch::jit::Module compiled = actnn::compile(shapeNet(), specialized("L0", {2, 3, 7, 7}));
  std::stringstream archive;
  compiled.save(archive);
  torch::jit::Module loaded = torch::jit::load(archive);
  for (torch::jit::Module* m : {&compiled, &loaded}) {
    actnn::test::expect_error([&] { m->forward({at::randn({2, 3, 8, 8})}); },
                              "actnn: forward input 'x' has sizes [2, 3, 8, 8] and dtype code 6; this module was "
                              "compiled for sizes [2, 3, 7, 7] and dtype code 6");
    actnn::test::expect_error([&] { m->forward({at::randn({2, 3, 7, 7}, at::kDouble)}); }, "dtype code 7");
  }
  torch::jit::Module reference = shapeNet();
  expectParity(actnn::testing::compareTrainingStep(reference, loaded, {at::randn({2, 3, 7, 7})}, 6));
  // Eval mode runs the original forward, which takes any size.
  loaded.eval();
  EXPECT_EQ(loaded.forward({at::randn({1, 3, 5, 5})}).toTensor().sizes(), at::IntArrayRef({1, 4, 5, 8}));
}

TEST(SpecializeShapes, CompressedLevelsTrain) {
  torch::jit::Module compiled = actnn::compile(shapeNet(), specialized("L3", {2, 3, 7, 7}));
  const at::Tensor x = at::randn({2, 3, 7, 7}).requires_grad_();
  compiled.forward({x}).toTensor().square().sum().backward();
  EXPECT_TRUE(x.grad().isfinite().all().item<bool>());
  EXPECT_TRUE(compiled.attr("w").toTensor().grad().defined());
}

}  // namespace
