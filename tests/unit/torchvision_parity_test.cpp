// L0 gradient parity on torchvision's classification, segmentation and video models,
// scripted at test time by Debian's python3-torchvision (random weights, train
// mode; Swin and the segmentation models branch on their input's sizes and
// rank, so they are compiled specialized to the input's sizes):
// loss, every parameter gradient, the input gradient and the updated batch
// norm statistics of the compiled module equal LibTorch autograd's on the
// original module (relative error <= 1e-5, fp32), also after a save/load
// round trip of the compiled module.
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/import.h>

#include <ATen/ATen.h>

#include "actnn/actnn.h"
#include "parity_util.h"

namespace {

struct ModelCase {
  const char* name;
  int64_t image;
  const char* specialize = nullptr;  // the forward input to give its sizes, if any
  int64_t frames = 0;                // video models: clips of this many frames
  std::vector<int64_t> shape() const {
    return frames ? std::vector<int64_t>{2, 3, frames, image, image} : std::vector<int64_t>{2, 3, image, image};
  }
};

actnn::Options level0(const ModelCase& c) {
  actnn::Options options;
  options.level = "L0";
  if (c.specialize) options.input_shapes = {{c.specialize, c.shape()}};
  return options;
}

std::string modelPath(const std::string& name) { return std::string(ACTNN_TEST_MODELS_DIR) + "/" + name + ".pt"; }

class TorchvisionParity : public ::testing::TestWithParam<ModelCase> {};

void expectParity(const actnn::testing::ParityReport& r) {
  for (const auto& p : r.problems) ADD_FAILURE() << p;
  EXPECT_LE(r.worst, 1e-5) << "worst: " << r.worst_name;
}

TEST_P(TorchvisionParity, GradientsEqualAutograd) {
  const auto& c = GetParam();
  torch::jit::Module reference = torch::jit::load(modelPath(c.name));
  torch::jit::Module original = torch::jit::load(modelPath(c.name));
  torch::jit::Module compiled = actnn::compile(original, level0(c));
  at::manual_seed(0);
  at::Tensor x = at::randn(c.shape());
  expectParity(actnn::testing::compareTrainingStep(reference, compiled, {x}, 7));
}

TEST_P(TorchvisionParity, GradientsEqualAutogradAfterSaveLoad) {
  const auto& c = GetParam();
  torch::jit::Module reference = torch::jit::load(modelPath(c.name));
  std::string archive = std::string(ACTNN_TEST_MODELS_DIR) + "/" + c.name + ".actnn.pt";
  actnn::compile(torch::jit::load(modelPath(c.name)), level0(c)).save(archive);
  torch::jit::Module loaded = torch::jit::load(archive);
  at::manual_seed(0);
  at::Tensor x = at::randn(c.shape());
  expectParity(actnn::testing::compareTrainingStep(reference, loaded, {x}, 11));
}

INSTANTIATE_TEST_SUITE_P(Models, TorchvisionParity,
                         ::testing::Values(ModelCase{"resnet18", 64}, ModelCase{"resnet50", 64},
                                           ModelCase{"mobilenet_v2", 64}, ModelCase{"mobilenet_v3_small", 64},
                                           ModelCase{"densenet121", 64}, ModelCase{"vgg11_bn", 64},
                                           ModelCase{"squeezenet1_0", 64}, ModelCase{"efficientnet_b0", 64},
                                           ModelCase{"regnet_x_400mf", 64}, ModelCase{"shufflenet_v2_x0_5", 64},
                                           ModelCase{"mnasnet0_5", 64}, ModelCase{"convnext_tiny", 64},
                                           ModelCase{"vit_b_16", 64}, ModelCase{"swin_t", 64, "x"},
                                           ModelCase{"fcn_resnet50", 64, "x"},
                                           ModelCase{"deeplabv3_mobilenet_v3_large", 64, "x"},
                                           ModelCase{"lraspp_mobilenet_v3_large", 64, "input"},
                                           // its classifier runs under the autograd fallback
                                           ModelCase{"resnet18_einsum", 64},
                                           // one per family the zoo has and the above do not
                                           ModelCase{"alexnet", 64}, ModelCase{"googlenet", 64},
                                           ModelCase{"swin_v2_t", 64, "x"}, ModelCase{"r3d_18", 32, nullptr, 4}),
                         [](const ::testing::TestParamInfo<ModelCase>& info) { return std::string(info.param.name); });

}  // namespace
