// Shape specialization (specialize-shapes, Options::input_shapes, and the
// runtime's cache of specializations per input signature): a module whose
// forward branches on its input's rank and sizes compiles ahead of time once
// the sizes are given and at run time for each signature it is called with
// (also after save and load), its gradients equal LibTorch autograd's for
// every size, and where only the runtime is loaded a specialized module
// refuses other sizes naming both signatures.
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
        y = torch.pow(y, float(y.size(-1) // 4))
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

// The signatures a compiled module has been specialized to in this process,
// each with the control flow it keeps.
std::vector<actnn::Specialization> specializations(const torch::jit::Module& m) {
  return actnn::specializations(m._ivalue());
}

// Uninstalls the compiler's Specializer for a scope: the process then holds
// the runtime alone, as a Python process that loaded only
// libactnn_runtime.so does.
struct RuntimeOnly {
  actnn::Specializer saved = actnn::setSpecializer({});
  ~RuntimeOnly() { actnn::setSpecializer(std::move(saved)); }
};

torch::jit::Module saveAndLoad(const torch::jit::Module& m) {
  std::stringstream archive;
  m.save(archive);
  return torch::jit::load(archive);
}

// Without input shapes the size-dependent branch stays a prim::If; its
// power's exponent is computed from sizes, which pow's rule refuses, so it
// cannot be differentiated per branch and runs under the autograd fallback
// (with it off it is refused). Where the compiler is linked the
// compiled module specializes itself to each signature it is called with
// (two sizes, two programs, neither keeping the branch), also after save
// and load.
TEST(SpecializeShapes, WithoutShapesTheModuleSpecializesToEachSignatureAtRunTime) {
  actnn::Options strict;
  strict.level = "L0";
  strict.fallback = false;
  actnn::test::expect_error([&] { actnn::compile(shapeNet(), strict); },
                            "prim::If produces tensors from values that require grad, and cannot be differentiated: "
                            "the rule for aten::pow in a branch refuses it");
  actnn::Options o;
  o.level = "L0";
  torch::jit::Module compiled = actnn::compile(shapeNet(), o);
  EXPECT_EQ(compiled.attr("_actnn_branch_ops").toInt(), 0);
  EXPECT_EQ(compiled.attr("_actnn_fallback_ops").toInt(), 1);
  torch::jit::Module loaded = saveAndLoad(compiled);
  for (torch::jit::Module* m : {&compiled, &loaded}) {
    EXPECT_TRUE(specializations(*m).empty());
    for (int64_t size : {7, 8, 7}) {
      torch::jit::Module reference = shapeNet();
      expectParity(actnn::testing::compareTrainingStep(reference, *m, {at::randn({2, 3, size, size})}, 5));
    }
    using Built = std::vector<actnn::Specialization>;
    EXPECT_EQ(specializations(*m), (Built{{"x:2x3x7x7:float32", 0, 0}, {"x:2x3x8x8:float32", 0, 0}}));
  }
}

// Where only the runtime is loaded, the module trains as compiled (the
// fallback is correct for any size) and says once what it is missing.
TEST(SpecializeShapes, WithoutTheCompilerTheModuleTrainsAsCompiled) {
  actnn::Options o;
  o.level = "L0";
  torch::jit::Module loaded = saveAndLoad(actnn::compile(shapeNet(), o));
  RuntimeOnly runtime_only;
  for (int64_t size : {7, 8}) {
    torch::jit::Module reference = shapeNet();
    expectParity(actnn::testing::compareTrainingStep(reference, loaded, {at::randn({2, 3, size, size})}, 5));
  }
  EXPECT_TRUE(specializations(loaded).empty());
}

TEST(SpecializeShapes, GradientsEqualAutogradForEachSpecialization) {
  // 7x7 takes the padding branch, 8x8 does not: two compiles, two programs.
  for (int64_t size : {7, 8}) {
    torch::jit::Module reference = shapeNet();
    torch::jit::Module compiled = actnn::compile(shapeNet(), specialized("L0", {2, 3, size, size}));
    expectParity(actnn::testing::compareTrainingStep(reference, compiled, {at::randn({2, 3, size, size})}, 5));
  }
}

// Compiled ahead of time for 7x7: a call with 8x8 gets its own program
// (also after save and load); the 7x7 calls keep the module's own. Where only
// the runtime is loaded, other sizes are refused naming both signatures.
TEST(SpecializeShapes, OtherSizesSpecializeAgainAfterSaveAndLoad) {
  torch::jit::Module compiled = actnn::compile(shapeNet(), specialized("L0", {2, 3, 7, 7}));
  EXPECT_EQ(compiled.attr("_actnn_fallback_ops").toInt(), 0);
  torch::jit::Module loaded = saveAndLoad(compiled);
  for (torch::jit::Module* m : {&compiled, &loaded}) {
    for (int64_t size : {7, 8}) {
      torch::jit::Module reference = shapeNet();
      expectParity(actnn::testing::compareTrainingStep(reference, *m, {at::randn({2, 3, size, size})}, 6));
    }
    using Built = std::vector<actnn::Specialization>;
    EXPECT_EQ(specializations(*m), (Built{{"x:2x3x8x8:float32", 0, 0}}));
  }
  torch::jit::Module runtime_only_module = saveAndLoad(compiled);
  RuntimeOnly runtime_only;
  actnn::test::expect_error([&] { runtime_only_module.forward({at::randn({2, 3, 8, 8})}); },
                            "actnn: this module was specialized to x:2x3x7x7:float32 (specialize-shapes) and is "
                            "called with x:2x3x8x8:float32; the actnn compiler, which would specialize it again, is "
                            "not loaded in this process");
  actnn::test::expect_error([&] { runtime_only_module.forward({at::randn({2, 3, 7, 7}, at::kDouble)}); },
                            "called with x:2x3x7x7:float64");
  torch::jit::Module reference = shapeNet();
  expectParity(actnn::testing::compareTrainingStep(reference, runtime_only_module, {at::randn({2, 3, 7, 7})}, 6));
  // Eval mode runs the original forward, which takes any size.
  runtime_only_module.eval();
  EXPECT_EQ(runtime_only_module.forward({at::randn({1, 3, 5, 5})}).toTensor().sizes(), at::IntArrayRef({1, 4, 5, 8}));
}

// A compressed module specialized at run time has its own compression state
// per signature, and trains.
TEST(SpecializeShapes, CompressedLevelsSpecializeAtRunTime) {
  actnn::Options o;
  o.level = "L3";
  torch::jit::Module compiled = actnn::compile(shapeNet(), o);
  for (int64_t size : {7, 8}) {
    const at::Tensor x = at::randn({2, 3, size, size}).requires_grad_();
    compiled.forward({x}).toTensor().square().sum().backward();
    EXPECT_TRUE(x.grad().isfinite().all().item<bool>());
  }
  EXPECT_EQ(specializations(compiled).size(), 2u);
  EXPECT_TRUE(compiled.attr("w").toTensor().grad().isfinite().all().item<bool>());
}

TEST(SpecializeShapes, CompressedLevelsTrain) {
  torch::jit::Module compiled = actnn::compile(shapeNet(), specialized("L3", {2, 3, 7, 7}));
  const at::Tensor x = at::randn({2, 3, 7, 7}).requires_grad_();
  compiled.forward({x}).toTensor().square().sum().backward();
  EXPECT_TRUE(x.grad().isfinite().all().item<bool>());
  EXPECT_TRUE(compiled.attr("w").toTensor().grad().defined());
}

}  // namespace
