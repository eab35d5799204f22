// Entry points of the compression kernels on raw buffers. The runtime's ops
// (runtime/) check arguments, allocate outputs and call these; the kernels
// trust their arguments. Formats are defined in quant_math.h.
#pragma once

#include <cstdint>

#include "actnn/kernels/quant_math.h"

namespace actnn {
namespace kernels {

struct QuantizeArgs {
  const void* x;  // N * D contiguous values of type `elem`
  Elem elem;
  QuantGeometry geo;
  uint64_t seed;
  uint64_t offset;
  uint8_t* codes;   // packed codes, size given by the geometry
  uint16_t* lo;     // N * P metadata values
  uint16_t* scale;  // N * P metadata values
  // Optional, CPU: per group, its (minimum, maximum) as group_range_squares_cpu
  // wrote them. The kernel then does not find them again (one pass over x
  // less when mixed precision has just computed them).
  const float* ranges = nullptr;
};

struct DequantizeArgs {
  const uint8_t* codes;
  const uint16_t* lo;
  const uint16_t* scale;
  QuantGeometry geo;
  Elem elem;  // type of the original values, and of `out`
  void* out;  // N * D values
  // Dithered decoding (quant_math.h) with the seed and offset quantize used.
  bool dither = false;
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// ---- CPU (multi-threaded with at::parallel_for) ----
void quantize_cpu(const QuantizeArgs& a);
void dequantize_cpu(const DequantizeArgs& a);
// Bit i of `out` (ceil(n / 8) bytes) is set when mask[i] != 0.
void pack_mask_cpu(const uint8_t* mask, int64_t n, uint8_t* out);
// The same bits from float values: set when x[i] != 0 (NaN is set, -0 is not).
void pack_nonzero_cpu(const float* x, int64_t n, uint8_t* out);
void unpack_mask_cpu(const uint8_t* packed, int64_t n, uint8_t* out);
// Packs n indices of width w (1..16), each in [0, limit) with limit <= 2^w.
// Returns -1, or the position of the first index outside [0, limit) (the output
// is then incomplete).
int64_t pack_index_cpu(const int64_t* index, int64_t n, int64_t limit, int w, uint8_t* out);
void unpack_index_cpu(const uint8_t* packed, int64_t n, int w, int64_t* out);
// out[i] = grad[i] * (bit i of packed ? if_set : if_clear), with a factor of
// 0 giving 0 even for Inf / NaN gradients (as masked_fill and ATen's relu
// backward do): a ReLU-like backward straight from a packed mask.
void scale_by_mask_cpu(const float* grad, const uint8_t* packed, int64_t n, float if_set, float if_clear,
                       float* out);

// Batch-norm backward in training mode over an (n, c, inner) contiguous
// float layout, from the batch statistics (mean, 1 / std) forward used.
// grad_input may equal x (written in place); null outputs are skipped.
struct BatchNormBackwardArgs {
  const float* grad_out;
  const float* x;
  const float* weight;  // null: 1
  const float* mean;
  const float* invstd;
  int64_t n, c, inner;
  float* grad_input;   // null: not wanted
  float* grad_weight;  // null: not wanted
  float* grad_bias;    // null: not wanted
  // Optional: x is a stochastically rounded copy (actnn::dequantize) whose
  // values in group g of sample i (noise_group_size consecutive values of the
  // sample's c * inner) carry rounding noise of variance noise_var[i *
  // noise_groups + g]. The input gradient then leaves out the noise's own
  // square, which (x - mean) * sum(dy * (x - mean)) would otherwise add
  // (README: "Unbiased normalization backward").
  const float* noise_var = nullptr;
  int64_t noise_groups = 0, noise_group_size = 0;
};
void batch_norm_backward_cpu(const BatchNormBackwardArgs& a);

// Statistics for mixed precision, one pass each. Per sample of the geometry
// (bits ignored): the sum over its groups of (max - min)^2, +inf when a group
// holds Inf or NaN. With `ranges` (2 floats per group), also each group's
// (minimum, maximum) as quantize finds them, (NaN, NaN) for a group holding
// Inf or NaN: QuantizeArgs::ranges.
void group_range_squares_cpu(const void* x, Elem elem, const QuantGeometry& geo, double* out,
                             float* ranges = nullptr);
// Per sample of n samples of d values: the sum of squares (accumulated in
// float within runs of 1024 values, in double across them).
void sample_square_norms_cpu(const void* x, Elem elem, int64_t n, int64_t d, double* out);

}  // namespace kernels
}  // namespace actnn
