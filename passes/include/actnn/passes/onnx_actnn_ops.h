// The com.actnn ONNX domain: Quantize and Dequantize (version 1), specified in
// docs/onnx-actnn-ops.md. Registering their schemas lets ONNX's checker
// validate the nodes (inputs, attributes, type constraints) and ONNX's shape
// inference type and shape their outputs. No LibTorch here: only libonnx.
#pragma once

#include <cstdint>
#include <vector>

namespace actnn {

constexpr const char* kActnnOnnxDomain = "com.actnn";
constexpr int kActnnOnnxOpsetVersion = 1;

// Registers the com.actnn domain and its schemas with ONNX's global registry.
// Idempotent and thread-safe; call it before checking or inferring a model
// that holds com.actnn nodes.
void registerActnnOnnxOps();

// The packed geometry of a Quantize input of the given static shape: N samples
// (dim 0; 1 for rank 0 or 1) of P groups, and the bytes of each output.
struct ActnnPackedGeometry {
  int64_t samples = 0;           // N
  int64_t groups_per_sample = 0; // P = ceil(D / group_size)
  int64_t code_bytes = 0;        // N * P * group_size * bits / 8 (output `codes`)
  int64_t meta_bytes = 0;        // 2 * N * P * 2 (outputs `lo` and `scale`)
  int64_t shape_bytes = 0;       // 8 * rank (output `shape`)
  int64_t total() const { return code_bytes + meta_bytes + shape_bytes; }
};
ActnnPackedGeometry actnnPackedGeometry(const std::vector<int64_t>& shape, int bits, int64_t group_size);

}  // namespace actnn
