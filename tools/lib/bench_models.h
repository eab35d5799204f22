// What the model-level suites (step, memory, ...) share: torchvision models
// scripted on demand and one training step of a module.
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/module.h>

#include "actnn/actnn.h"

namespace actnn {
namespace tools {

class Args;

// The flags the single-model suites share: --model, --level, --batch,
// --image, --channels, --threads.
struct ModelFlags {
  std::string model, level, passes;
  int64_t batch = 0, image = 0, channels = 0;
  // A random input batch [batch, channels, image, image] (seed 0).
  at::Tensor input() const;
  // The compile options: the level, or --passes when given.
  Options options() const;
};
void declareModelFlags(Args& args, const char* default_level, const char* default_batch);
// Checks the values and the level (an unknown one fails before any model
// runs; "fp", LibTorch autograd, only when `allow_fp`) and applies --threads.
ModelFlags readModelFlags(const Args& args, bool allow_fp = false);

// `name` is a path to a TorchScript archive (ends in .pt) or an ONNX model
// (.onnx, .onnxtxt: imported, see actnn/passes/onnx_import.h), a torchvision
// classification model's name or "fashion_resnet" (the bundled example):
// <models dir>/<name>.pt, scripted first by Debian's python3-torchvision
// (random weights, train mode) when missing.
// The models dir is $ACTNN_MODELS_DIR, else the build tree's tests/models.
torch::jit::Module loadModel(const std::string& name);
// loadModel(name), compiled at `level` unless it is "fp" (LibTorch autograd
// on the original module).
torch::jit::Module modelAtLevel(const std::string& name, const std::string& level);

// Compile options for a level name of the quality suites (gradients,
// accuracy): "L0".."L5", or "L1-biased".."L5-biased", the level's pipeline
// without debias-backward (how the levels were before it). Throws
// UsageError for anything else.
Options levelVariant(const std::string& name);

// The torchvision models of the gradient-parity test, comma-separated.
std::string parityModels();
// The image size `model` runs at: `requested`, except for models scripted
// for one size (vit_b_16 at 64, see tests/models/export_torchvision.py).
int64_t scriptedImageSize(const std::string& model, int64_t requested);
// Applies --threads (0: LibTorch's default).
void setThreads(int64_t threads);

// Bytes of the module's parameters and buffers.
int64_t stateBytes(const torch::jit::Module& m);
// "a,b,c" -> {a, b, c}
std::vector<std::string> splitList(const std::string& text);
// Throws UsageError (exit 2, before any work) for a level the registry does
// not know; "fp" (plain LibTorch autograd) passes when allowed.
void checkLevels(const std::vector<std::string>& levels, bool allow_fp);

// Drops the parameters' gradients (each step then allocates them anew).
void dropGrads(torch::jit::Module& module);

// One training step: forward, loss = sum(out), backward. Gradients are
// dropped first, so every step allocates what a real one does.
void trainingStep(torch::jit::Module& module, const at::Tensor& input);

// Bytes one training step holds (MemoryTracker; see bench_memory.cpp).
struct StepMemory {
  int64_t saved_bytes = 0;  // live after forward, minus the output
  int64_t peak_bytes = 0;   // peak of live bytes during the step
};
// One warm-up step, then one measured step.
StepMemory measureStep(torch::jit::Module& module, const at::Tensor& input);

}  // namespace tools
}  // namespace actnn
