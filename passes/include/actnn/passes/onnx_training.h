// ONNX training graphs: one ONNX graph holding a forward and a backward part,
// as ONNX Runtime's training artifacts (`training_model.onnx`) have. The
// rewrite finds the values the backward part reads from the forward part (the
// saved set) and stores the float ones quantized: a com.actnn::Quantize node
// right after the producer, one com.actnn::Dequantize feeding the backward
// readers (docs/onnx-actnn-ops.md specifies both ops). What com.microsoft
// ReluGrad reads is replaced by a bool mask (Greater / Where, standard ops).
// Quantized float tensors have a known rank of 2 or more; views (Flatten,
// Reshape, Squeeze, Unsqueeze, Identity) share their source's buffer and its
// decision. Gradients stay unbiased for backward readers linear in the value;
// nonlinear readers (TanhGrad, SoftmaxGrad, SoftmaxCrossEntropyLossGrad's
// log-probabilities) get a slightly biased one, as in the TorchScript path.
// How the graph is split and what is left alone is documented at the top of
// passes/onnx/insert_quantize.cpp. No LibTorch here: only libonnx.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "onnx/onnx_pb.h"

namespace actnn {

// A training graph the rewrite cannot handle; the message names the node (its
// name, or its position and outputs when unnamed), op type and domain.
struct OnnxTrainingError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What gets quantized. ONNX ops carry their width as an attribute, so the width
// is static and one per value: the levels' mixed precision (L3), swapping (L4)
// and arena (L5) are features of the TorchScript runtime.
struct OnnxCompressionPolicy {
  int bits = 2;                   // 1, 2, 4 or 8; 0 quantizes nothing (L0)
  int64_t group_size = 256;       // a positive multiple of 32
  bool only_conv_inputs = false;  // L1: only the data inputs of Conv / ConvTranspose
};

// L0: nothing; L1: conv inputs at 4 bits; L2: every float activation at 4 bits;
// L3-L5: every float activation at 2 bits. Throws OnnxTrainingError otherwise.
OnnxCompressionPolicy onnxPolicyForLevel(const std::string& level);

// One value the backward part reads from the forward part, or a mask that
// stands in for one. The bytes of values sharing a buffer (a value and its
// views) are counted once: full_bytes is the buffer's size on the first row
// of its alias class and 0 on the others.
struct OnnxSavedValue {
  std::string value;
  std::string producer;                // "node 'name' (domain::Op)" or "node #3 (Op) defining a, b"
  std::vector<std::string> consumers;  // its backward readers, same form
  std::string dtype;                   // "float32", "int64", ...; "?" when unknown
  std::optional<std::vector<std::string>> shape;  // dims ("8", "batch", "?"); unset when the rank is unknown
  // "quantized"; "kept" (full precision); "alias" (a view of a kept value,
  // stored 0 bytes, or of a quantized one, restored by Reshape: stores its
  // shape); "mask" (bool Greater(v, 0) read by Where in place of ReluGrad).
  std::string action;
  bool quantized = false;              // action == "quantized"
  std::string reason;                  // why it was kept, what it aliases or masks; "quantized"
  int bits = 0;                        // code width when quantized, else the element width; 0: unknown
  std::optional<int64_t> full_bytes;   // when the shape is static
  std::optional<int64_t> stored_bytes;
};

struct OnnxTrainingReport {
  int64_t forward_nodes = 0;
  int64_t backward_nodes = 0;
  std::vector<OnnxSavedValue> saved;  // in the order their producers run
  bool changed() const;               // true when a Quantize or mask node was inserted
};

// Rewrites `model` in place and reports on every saved value. `gradient_seeds`
// overrides the rule that finds the backward part (graph inputs or
// initializers named `<value>_grad`): its values are the seeds instead.
// Throws OnnxTrainingError for a graph without a backward part, a graph that
// is not topologically sorted or already holds com.actnn nodes, a bad policy,
// or a name it cannot resolve.
OnnxTrainingReport insertOnnxQuantize(::onnx::ModelProto& model, const OnnxCompressionPolicy& policy,
                                      const std::vector<std::string>& gradient_seeds = {});

// Whether the graph has a gradient seed by the rule above (a graph input or
// initializer named `<v>_grad` after a node output `<v>`): what makes
// actnn-opt treat an ONNX model as a training graph to rewrite rather than a
// model to import.
bool hasGradientSeed(const ::onnx::ModelProto& model);

// The report as a table (one row per saved value, totals first) and as JSON
// lines (one object per saved value, then one summary object).
std::string formatOnnxTrainingReport(const OnnxTrainingReport& report);
std::string formatOnnxTrainingReportJson(const OnnxTrainingReport& report);

}  // namespace actnn
