// The ONNX front end: an ONNX model (binary `.onnx` or ONNX text syntax
// `.onnxtxt`) becomes a TorchScript module that goes through the same
// pipeline as a scripted one (lower-module, canonicalize, autodiff, ...).
//
//   torch::jit::Module m = actnn::onnx::importFile("resnet18.onnx");
//   torch::jit::Module c = actnn::compile(m, options);
//
// What the imported module is:
// - float initializers of rank >= 1 read by an op as data become trainable
//   parameters (requires_grad), batch normalization's running mean and
//   variance become buffers; integer initializers, rank-0 float ones (the
//   scalars simplifiers store as initializers) and float ones read only where
//   an op needs a constant (Clip bounds, Pad values, ...) become constants;
// - the module is specialized to the model's static input shapes where the
//   model computes with them (Shape is evaluated at import);
// - names are kept: an initializer "layer1.0.conv1.weight" is the parameter
//   of that state_dict key (submodules "layer1", "0", "conv1"); a name that is
//   not a dotted path of identifiers is made one ("onnx::Conv_193" ->
//   "onnx__Conv_193");
// - forward() takes the graph inputs that are not initializers, in order, and
//   returns the one output, or a tuple of them;
// - shape arithmetic on constants (Shape of a statically shaped value,
//   Gather/Unsqueeze/Concat/Cast/... on constants) is evaluated at import, so
//   Reshape, Expand, Slice, Pad, ... see constant operands.
//
// Batch normalization in training mode (opset 14+ `training_mode=1`, or the
// five-output form of opsets 9-13) whose running statistics are initializers
// updates those buffers in place the way torch.nn.BatchNorm does (momentum
// 1 - ONNX momentum, unbiased variance), so a torchvision export trains like
// the module it came from. When its running-statistics outputs are used by the
// graph instead, they are computed as the ONNX specification says (biased
// variance) and the inputs are left alone.
//
// Errors name the file, the node (name and index), its op type, domain and
// the opset: malformed files, a failing ONNX checker, opsets outside 9-17,
// unsupported ops or attributes, dangling inputs, non-constant operands that
// must be constants.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include <torch/csrc/jit/api/module.h>

namespace onnx {
class ModelProto;
class TensorProto;
}  // namespace onnx

namespace actnn {
namespace onnx {

// An ONNX model this front end rejects (bad file, bad model, bad opset).
struct ImportError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A well-formed model that uses an op, attribute value or dynamic shape this
// front end does not implement (the backend test runner counts these as
// skipped, never as failures).
struct UnsupportedError : ImportError {
  using ImportError::ImportError;
};

constexpr int kMinOpset = 9;
constexpr int kMaxOpset = 17;

// Whether `path` names an ONNX model by its suffix (.onnx, .onnxtxt).
bool isModelPath(const std::string& path);
// Reads `path` (binary protobuf, or ONNX text syntax when it ends in
// ".onnxtxt"); loadModel also runs the ONNX checker.
::onnx::ModelProto readModel(const std::string& path);
::onnx::ModelProto loadModel(const std::string& path);
// Parses ONNX text syntax; `origin` names it in errors.
::onnx::ModelProto parseModelText(const std::string& text, const std::string& origin);
void checkModel(const ::onnx::ModelProto& model, const std::string& origin);

// The model as a TorchScript module (see above). `origin` names it in errors.
torch::jit::Module importModel(const ::onnx::ModelProto& model, const std::string& origin = "<onnx>");
// loadModel(path) then importModel: for callers without protobuf headers.
torch::jit::Module importFile(const std::string& path);

// The ops importModel lowers (default domain), sorted; for --help and the
// backend test runner.
std::vector<std::string> supportedOps();
bool isSupportedOp(const std::string& op_type);
// Whether operand `input` of `op_type` must be a constant at import (a shape,
// axes, bounds, padding widths, ...).
bool isConstantOperand(const std::string& op_type, int input);

// A TensorProto (raw or typed data; no external data) as a CPU tensor.
at::Tensor toTensor(const ::onnx::TensorProto& proto, const std::string& what);

// The default-domain opset a model imports (0 when it imports none).
int64_t defaultOpset(const ::onnx::ModelProto& model);

}  // namespace onnx
}  // namespace actnn
