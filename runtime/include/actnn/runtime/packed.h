// A saved activation in compressed form: the TorchScript custom class
// `torch.classes.actnn.PackedActivation` that actnn::quantize returns and
// actnn::dequantize consumes, so rewritten IR stays typed. It pickles, so a
// module holding one saves and loads like any other.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include <cstdint>
#include <vector>

namespace actnn {

// Samples run along dim 0; a tensor of rank 0 or 1 is one sample (how
// quantize groups values, and how the compression statistics count samples).
inline int64_t sampleCount(at::IntArrayRef shape) { return shape.size() < 2 ? 1 : shape[0]; }

inline int64_t alignBytes(int64_t v, int64_t alignment) { return (v + alignment - 1) / alignment * alignment; }

// A packed activation's three parts laid out in one slice (an arena slot):
// codes at 0, then lo, then scale, each starting on `alignment`.
struct PackedSliceLayout {
  int64_t lo_at = 0, scale_at = 0, bytes = 0;
};
inline PackedSliceLayout packedSliceLayout(int64_t code_bytes, int64_t meta_bytes_each, int64_t alignment) {
  PackedSliceLayout l;
  l.lo_at = alignBytes(code_bytes, alignment);
  l.scale_at = l.lo_at + alignBytes(meta_bytes_each, alignment);
  l.bytes = l.scale_at + meta_bytes_each;
  return l;
}
inline int64_t packedSliceBytes(int64_t code_bytes, int64_t meta_bytes_each, int64_t alignment) {
  return packedSliceLayout(code_bytes, meta_bytes_each, alignment).bytes;
}

struct PackedActivation : torch::CustomClassHolder {
  at::Tensor codes;            // uint8, every sample's codes back to back
  at::Tensor lo;               // per group minimum, [N, P], BFloat16 or Half
  at::Tensor scale;            // per group scale, [N, P], same type as lo
  std::vector<int64_t> shape;  // shape of the original tensor
  int64_t dtype = 0;           // c10::ScalarType of the original tensor
  std::vector<int64_t> bits;   // one entry (every sample) or one per sample
  int64_t group_size = 0;
  // The quantize call's Philox key and offset, and whether dequantize
  // subtracts the dither they regenerate (quant_math.h, "Dithered decoding"):
  // set for values a reader needs the exact noise variance of.
  int64_t seed = 0, offset = 0;
  bool dither = false;
  // Where the original was float64: quantized from its float32 copy (dtype
  // says Float, what the parts were made from) and decoded back to this
  // c10::ScalarType; -1 when the original had `dtype`.
  int64_t restore_dtype = -1;
  // Set when only the lower triangle (diagonal included) of the last two
  // dims was packed, the strict upper triangle being exactly zero (a causal
  // attention's probabilities): the original's shape, while `shape` is
  // [N, M], each sample's lower triangles back to back (see
  // packLowerTriangle). Dequantize restores the zeros.
  std::vector<int64_t> lower_triangle_of;

  PackedActivation() = default;
  PackedActivation(at::Tensor codes, at::Tensor lo, at::Tensor scale, std::vector<int64_t> shape,
                   int64_t dtype, std::vector<int64_t> bits, int64_t group_size);

  // Bytes held: codes plus metadata.
  int64_t nbytes() const;
  // Bytes the original tensor held.
  int64_t original_nbytes() const;
  // The original tensor's shape (what dequantize returns).
  const std::vector<int64_t>& original_shape() const {
    return lower_triangle_of.empty() ? shape : lower_triangle_of;
  }
  c10::ScalarType scalar_type() const { return static_cast<c10::ScalarType>(dtype); }
  // The original tensor's dtype (what dequantize returns).
  c10::ScalarType original_type() const {
    return restore_dtype < 0 ? scalar_type() : static_cast<c10::ScalarType>(restore_dtype);
  }
  // The same value with its parts elsewhere (a swap's copies).
  c10::intrusive_ptr<PackedActivation> withParts(at::Tensor codes, at::Tensor lo, at::Tensor scale) const;

  using State = std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<int64_t>, int64_t,
                           std::vector<int64_t>, int64_t, int64_t, int64_t, bool, int64_t, std::vector<int64_t>>;
  State state() const;
  // Rebuilds from state(), checking that the parts agree (a corrupted archive
  // is reported, not dequantized into garbage).
  static c10::intrusive_ptr<PackedActivation> from_state(State s);
};

// Causal attention probabilities are zero above the diagonal; storing only
// the lower triangle halves what they take, losslessly. x has a sample dim
// and square last two dims (rank >= 3).
// Whether every value strictly above the diagonal of x's last two dims is
// exactly zero (false at the first nonzero of the first row: cheap for the
// square images of a CNN).
bool strictUpperTriangleIsZero(const at::Tensor& x);
// [N, M]: per sample, the lower triangles (diagonal included) of x's last
// two dims in row-major order.
at::Tensor packLowerTriangle(const at::Tensor& x);
// The inverse: a tensor of `shape` with `values` ([N, M]) below and on the
// diagonal and zeros above.
at::Tensor unpackLowerTriangle(const at::Tensor& values, at::IntArrayRef shape);

}  // namespace actnn
