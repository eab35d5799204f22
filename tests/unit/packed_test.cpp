// The PackedActivation custom class: typed use from TorchScript, serialization
// inside a saved module, and rejection of corrupted state.
#include <gtest/gtest.h>
#include <torch/custom_class.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/script.h>

#include <sstream>

#include "actnn/runtime/ops.h"
#include "test_util.h"

namespace actnn {
namespace {

// TorchScript source compiled from C++ reaches custom ops as
// `ops.<namespace>.<op>`, the spelling saved archives use; LibTorch's native
// resolver only knows `torch`, so `ops` is added here.
struct OpsNamespaces : torch::jit::SugaredValue {
  std::string kind() const override { return "ops"; }
  std::shared_ptr<torch::jit::SugaredValue> attr(const torch::jit::SourceRange&,
                                                 torch::jit::GraphFunction&,
                                                 const std::string& ns) override {
    return std::make_shared<torch::jit::BuiltinModule>(ns);
  }
};

struct OpsResolver : torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(const std::string& name,
                                                         torch::jit::GraphFunction& f,
                                                         const torch::jit::SourceRange& loc) override {
    if (name == "ops") return std::make_shared<OpsNamespaces>();
    return torch::jit::nativeResolver()->resolveValue(name, f, loc);
  }
  c10::TypePtr resolveType(const std::string& name, const torch::jit::SourceRange& loc) override {
    return torch::jit::nativeResolver()->resolveType(name, loc);
  }
};

at::Tensor data() {
  at::Generator gen = at::detail::createCPUGenerator(7);
  return at::randn({4, 3, 7, 7}, gen);
}

TEST(PackedClass, UsableFromTorchScript) {
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  cu->define(c10::nullopt, R"JIT(
def roundtrip(x: Tensor) -> Tuple[Tensor, int, List[int]]:
    p = ops.actnn.quantize(x, [4], 64, 3, 0)
    return ops.actnn.dequantize(p, x.shape, x.dtype), p.nbytes(), p.bits()
)JIT",
             std::make_shared<OpsResolver>(), nullptr);
  const at::Tensor x = data();
  auto out = cu->run_method("roundtrip", x).toTuple();
  const auto direct = quantize(x, {4}, 64, 3, 0);
  EXPECT_TRUE(at::equal(out->elements()[0].toTensor(), dequantize(*direct)));
  EXPECT_EQ(out->elements()[1].toInt(), direct->nbytes());
  EXPECT_EQ(out->elements()[2].toIntVector(), std::vector<int64_t>{4});
}

TEST(PackedClass, SurvivesModuleSaveAndLoad) {
  const at::Tensor x = data();
  const auto p = quantize(x, {2, 8, 1, 4}, 128, 5, 3);
  p->dither = true;
  torch::jit::Module m("Holder");
  m.register_attribute("packed",
                       torch::getCustomClass("__torch__.torch.classes.actnn.PackedActivation"),
                       c10::IValue(p));
  m.define(R"JIT(
def forward(self) -> Tensor:
    return ops.actnn.dequantize(self.packed)
)JIT",
           std::make_shared<OpsResolver>());
  std::stringstream archive;
  m.save(archive);
  torch::jit::Module loaded = torch::jit::load(archive);
  const auto q = loaded.attr("packed").toCustomClass<PackedActivation>();
  EXPECT_TRUE(test::bytes_equal(p->codes, q->codes));
  EXPECT_TRUE(test::bytes_equal(p->lo, q->lo));
  EXPECT_TRUE(test::bytes_equal(p->scale, q->scale));
  EXPECT_EQ(q->shape, p->shape);
  EXPECT_EQ(q->bits, p->bits);
  EXPECT_EQ(q->group_size, 128);
  EXPECT_EQ(q->scalar_type(), at::kFloat);
  EXPECT_EQ(q->seed, 5);
  EXPECT_EQ(q->offset, 3);
  EXPECT_TRUE(q->dither);
  EXPECT_TRUE(at::equal(loaded.forward({}).toTensor(), dequantize(*p)));
}

TEST(PackedClass, CorruptedStateIsRejected) {
  const auto p = quantize(data(), {2}, 64, 0, 0);
  auto state = p->state();
  std::get<1>(state) = std::get<1>(state).narrow(1, 0, 1);  // lo loses groups
  test::expect_error([&] { PackedActivation::from_state(state); },
                     "actnn.PackedActivation (loading): lo must be BFloat16 of shape [4, 3]");
  state = p->state();
  std::get<0>(state) = std::get<0>(state).narrow(0, 0, 10);
  test::expect_error([&] { PackedActivation::from_state(state); }, "codes must be a 1-d uint8 tensor");
  state = p->state();
  std::get<4>(state) = 999;
  test::expect_error([&] { PackedActivation::from_state(state); }, "invalid dtype code 999");
}

}  // namespace
}  // namespace actnn
