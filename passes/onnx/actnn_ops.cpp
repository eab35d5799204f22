// Schemas of com.actnn::Quantize and com.actnn::Dequantize (version 1), the
// ops insert_quantize.cpp puts into ONNX training graphs; their semantics are
// docs/onnx-actnn-ops.md. The checker validates a node's arity, attribute
// types and type constraints from these schemas; the inference functions also
// reject bad attribute values and derive the packed shapes:
//
//   X: float[batch,8,4,4]  --Quantize<bits=2, group_size=256>-->
//     codes: uint8[batch,64]  lo, scale: bfloat16[batch,1]  shape: int64[4]
//   (codes, lo, scale, shape) --Dequantize<bits=2, group_size=256, to=1>--> float[?,?,?,?]
//
// (Dequantize knows only its output's rank; the pass that inserts it records
// the full type as value_info.)
#include "actnn/passes/onnx_actnn_ops.h"

#include <mutex>
#include <string>

#include "onnx/defs/schema.h"
#include "onnx/defs/shape_inference.h"

namespace actnn {
namespace {

using ::onnx::InferenceContext;
using ::onnx::OpSchema;
using ::onnx::TensorProto;

void checkCodeAttributes(InferenceContext& ctx) {
  const int64_t bits = ::onnx::getAttribute(ctx, "bits", 0);
  if (bits != 1 && bits != 2 && bits != 4 && bits != 8)
    fail_type_inference("attribute bits must be 1, 2, 4 or 8, got ", bits);
  const int64_t group_size = ::onnx::getAttribute(ctx, "group_size", 256);
  if (group_size <= 0 || group_size % 32 != 0)
    fail_type_inference("attribute group_size must be a positive multiple of 32, got ", group_size);
}

void inferQuantize(InferenceContext& ctx) {
  checkCodeAttributes(ctx);
  const ::onnx::TypeProto* in = ctx.getInputType(0);
  if (in == nullptr || !in->has_tensor_type()) return;  // input type unknown: nothing to infer
  const int32_t elem = in->tensor_type().elem_type();
  ::onnx::updateOutputElemType(ctx, 0, TensorProto::UINT8);
  const int32_t meta = elem == TensorProto::FLOAT16 ? TensorProto::FLOAT16 : TensorProto::BFLOAT16;
  ::onnx::updateOutputElemType(ctx, 1, meta);
  ::onnx::updateOutputElemType(ctx, 2, meta);
  ::onnx::updateOutputElemType(ctx, 3, TensorProto::INT64);
  if (!::onnx::hasInputShape(ctx, 0)) return;
  const auto& shape_in = ::onnx::getInputShape(ctx, 0);
  const int rank = shape_in.dim_size();
  ::onnx::updateOutputShape(ctx, 3, {::onnx::TensorShapeProto::Dimension()});
  ctx.getOutputType(3)->mutable_tensor_type()->mutable_shape()->mutable_dim(0)->set_dim_value(rank);

  // N: dim 0 (1 for rank 0 or 1); D: the product of the other dims.
  ::onnx::TensorShapeProto::Dimension samples, row, groups;
  if (rank >= 2) samples = shape_in.dim(0);
  else samples.set_dim_value(1);
  int64_t sample_numel = 1;
  bool known = true;
  for (int i = rank >= 2 ? 1 : 0; i < rank; ++i) {
    if (!shape_in.dim(i).has_dim_value()) known = false;
    else sample_numel *= shape_in.dim(i).dim_value();
  }
  if (known) {
    const int64_t bits = ::onnx::getAttribute(ctx, "bits", 0);
    const int64_t group_size = ::onnx::getAttribute(ctx, "group_size", 256);
    const int64_t p = (sample_numel + group_size - 1) / group_size;
    groups.set_dim_value(p);
    row.set_dim_value(p * group_size * bits / 8);
  }
  ::onnx::updateOutputShape(ctx, 0, {samples, row});
  ::onnx::updateOutputShape(ctx, 1, {samples, groups});
  ::onnx::updateOutputShape(ctx, 2, {samples, groups});
}

void inferDequantize(InferenceContext& ctx) {
  checkCodeAttributes(ctx);
  const int64_t to = ::onnx::getAttribute(ctx, "to", 0);
  if (to != TensorProto::FLOAT && to != TensorProto::FLOAT16 && to != TensorProto::BFLOAT16)
    fail_type_inference("attribute to must be FLOAT (1), FLOAT16 (10) or BFLOAT16 (16), got ", to);
  ::onnx::updateOutputElemType(ctx, 0, int32_t(to));
  const ::onnx::TypeProto* lo = ctx.getInputType(1);
  if (lo != nullptr && lo->has_tensor_type() && lo->tensor_type().elem_type() != TensorProto::UNDEFINED &&
      (to == TensorProto::FLOAT16) != (lo->tensor_type().elem_type() == TensorProto::FLOAT16))
    fail_type_inference("lo and scale must be float16 exactly when to is FLOAT16 (10)");
  if (!::onnx::hasInputShape(ctx, 3)) return;
  const auto& shape_shape = ::onnx::getInputShape(ctx, 3);
  if (shape_shape.dim_size() != 1) fail_shape_inference("input shape must be 1-D");
  if (!shape_shape.dim(0).has_dim_value()) return;
  auto* out = ctx.getOutputType(0)->mutable_tensor_type()->mutable_shape();
  for (int64_t i = 0; i < shape_shape.dim(0).dim_value(); ++i) out->add_dim();
}

OpSchema quantizeSchema() {
  OpSchema s;
  s.SetName("Quantize")
      .SetDomain(kActnnOnnxDomain)
      .SinceVersion(kActnnOnnxOpsetVersion)
      .SetDoc("Per-group stochastic quantization of a float tensor into `bits`-bit codes "
              "(docs/onnx-actnn-ops.md).")
      .Attr("bits", "code width: 1, 2, 4 or 8", ::onnx::AttributeProto::INT)
      .Attr("group_size", "values per group, a positive multiple of 32", ::onnx::AttributeProto::INT,
            int64_t(256))
      .Attr("seed", "when set, the Philox4x32-10 key of the rounding noise (reproducible codes)",
            ::onnx::AttributeProto::INT, false)
      .Input(0, "X", "the tensor to quantize", "T")
      .Output(0, "codes", "[N, P * group_size * bits / 8] packed codes, one row per sample", "tensor(uint8)")
      .Output(1, "lo", "[N, P] per-group minimum", "M")
      .Output(2, "scale", "[N, P] per-group scale", "M")
      .Output(3, "shape", "the shape of X", "tensor(int64)")
      .TypeConstraint("T", {"tensor(float)", "tensor(float16)", "tensor(bfloat16)"}, "input type")
      .TypeConstraint("M", {"tensor(bfloat16)", "tensor(float16)"},
                      "metadata type: float16 for float16 input, bfloat16 otherwise")
      .TypeAndShapeInferenceFunction(inferQuantize);
  return s;
}

OpSchema dequantizeSchema() {
  OpSchema s;
  s.SetName("Dequantize")
      .SetDomain(kActnnOnnxDomain)
      .SinceVersion(kActnnOnnxOpsetVersion)
      .SetDoc("Restores a tensor from the outputs of com.actnn::Quantize (docs/onnx-actnn-ops.md).")
      .Attr("bits", "code width: 1, 2, 4 or 8, as given to Quantize", ::onnx::AttributeProto::INT)
      .Attr("group_size", "values per group, as given to Quantize", ::onnx::AttributeProto::INT, int64_t(256))
      .Attr("to", "element type of Y: FLOAT (1), FLOAT16 (10) or BFLOAT16 (16)", ::onnx::AttributeProto::INT)
      .Input(0, "codes", "Quantize's codes", "tensor(uint8)")
      .Input(1, "lo", "Quantize's lo", "M")
      .Input(2, "scale", "Quantize's scale", "M")
      .Input(3, "shape", "Quantize's shape", "tensor(int64)")
      .Output(0, "Y", "the dequantized tensor", "T")
      .TypeConstraint("T", {"tensor(float)", "tensor(float16)", "tensor(bfloat16)"}, "output type")
      .TypeConstraint("M", {"tensor(bfloat16)", "tensor(float16)"}, "metadata type")
      .TypeAndShapeInferenceFunction(inferDequantize);
  return s;
}

}  // namespace

void registerActnnOnnxOps() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto& domains = ::onnx::OpSchemaRegistry::DomainToVersionRange::Instance();
    if (!domains.Map().count(kActnnOnnxDomain))
      domains.AddDomainToVersion(kActnnOnnxDomain, kActnnOnnxOpsetVersion, kActnnOnnxOpsetVersion);
    if (!::onnx::OpSchemaRegistry::Schema("Quantize", kActnnOnnxOpsetVersion, kActnnOnnxDomain))
      ::onnx::RegisterSchema(quantizeSchema());
    if (!::onnx::OpSchemaRegistry::Schema("Dequantize", kActnnOnnxOpsetVersion, kActnnOnnxDomain))
      ::onnx::RegisterSchema(dequantizeSchema());
  });
}

ActnnPackedGeometry actnnPackedGeometry(const std::vector<int64_t>& shape, int bits, int64_t group_size) {
  ActnnPackedGeometry g;
  const size_t first = shape.size() >= 2 ? 1 : 0;
  g.samples = shape.size() >= 2 ? shape[0] : 1;
  int64_t sample_numel = 1;
  for (size_t i = first; i < shape.size(); ++i) sample_numel *= shape[i];
  g.groups_per_sample = (sample_numel + group_size - 1) / group_size;
  g.code_bytes = g.samples * g.groups_per_sample * group_size * bits / 8;
  g.meta_bytes = 2 * g.samples * g.groups_per_sample * 2;
  g.shape_bytes = 8 * int64_t(shape.size());
  return g;
}

}  // namespace actnn
