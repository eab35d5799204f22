#include "checks.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace actnn {

namespace {

kernels::Elem elem_of(const char* op, c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float: return kernels::Elem::Float32;
    case c10::ScalarType::Half: return kernels::Elem::Float16;
    case c10::ScalarType::BFloat16: return kernels::Elem::BFloat16;
    default:
      TORCH_CHECK(false, op, ": x must be a floating-point tensor of dtype Float, Half or BFloat16, got ",
                  t);
  }
}

}  // namespace

QuantPlan plan_quantize(const char* op, c10::ScalarType dtype, at::IntArrayRef shape,
                        at::IntArrayRef bits, int64_t group_size) {
  QuantPlan plan;
  plan.elem = elem_of(op, dtype);
  plan.meta_dtype = kernels::meta_is_half(plan.elem) ? c10::ScalarType::Half : c10::ScalarType::BFloat16;
  TORCH_CHECK(group_size > 0 && group_size % 32 == 0, op,
              ": group_size must be a positive multiple of 32, got ", group_size);
  const int64_t n = sampleCount(shape);
  int64_t d = 1;
  for (size_t i = shape.size() < 2 ? 0 : 1; i < shape.size(); ++i) d *= shape[i];
  TORCH_CHECK(!bits.empty(), op, ": bits must hold one width, or one per sample (", n, "), got none");
  TORCH_CHECK(bits.size() == 1 || int64_t(bits.size()) == n, op,
              ": bits must hold one width, or one per sample (", n, " samples along dim 0), got ",
              bits.size(), " widths");
  for (size_t i = 0; i < bits.size(); ++i) {
    TORCH_CHECK(kernels::valid_bits(bits[i]), op, ": bits must be 1, 2, 4 or 8, got ", bits[i],
                bits.size() > 1 ? " for sample " + std::to_string(i) : std::string());
  }
  auto& geo = plan.geo;
  geo.num_samples = n;
  geo.sample_numel = d;
  geo.group_size = group_size;
  geo.groups_per_sample = (d + group_size - 1) / group_size;
  bool uniform = true;
  for (int64_t b : bits) uniform = uniform && b == bits[0];
  if (uniform) {
    geo.uniform_bits = int(bits[0]);
    plan.code_bytes = n * geo.sample_bytes(geo.uniform_bits);
  } else {
    geo.uniform_bits = 0;
    plan.sample_bits.resize(n);
    plan.sample_offsets.resize(n);
    int64_t off = 0;
    for (int64_t i = 0; i < n; ++i) {
      plan.sample_bits[i] = uint8_t(bits[i]);
      plan.sample_offsets[i] = off;
      off += geo.sample_bytes(int(bits[i]));
    }
    plan.code_bytes = off;
  }
  return plan;
}

void check_packed_tensors(const char* op, const QuantPlan& plan, const at::Tensor& codes,
                          const at::Tensor& lo, const at::Tensor& scale) {
  const auto& geo = plan.geo;
  TORCH_CHECK(codes.scalar_type() == c10::ScalarType::Byte && codes.dim() == 1 &&
                  codes.numel() == plan.code_bytes,
              op, ": codes must be a 1-d uint8 tensor of ", plan.code_bytes, " bytes, got ",
              codes.scalar_type(), " of shape ", codes.sizes());
  for (const auto* t : {&lo, &scale}) {
    const char* name = t == &lo ? "lo" : "scale";
    TORCH_CHECK(t->scalar_type() == plan.meta_dtype && t->dim() == 2 &&
                    t->size(0) == geo.num_samples && t->size(1) == geo.groups_per_sample,
                op, ": ", name, " must be ", plan.meta_dtype, " of shape [", geo.num_samples, ", ",
                geo.groups_per_sample, "], got ", t->scalar_type(), " of shape ", t->sizes());
    TORCH_CHECK(t->device() == codes.device(), op, ": ", name, " is on ", t->device(),
                " but codes are on ", codes.device());
  }
}

void check_packed_parts(const char* op, const PackedActivation& p) {
  const QuantPlan plan = plan_quantize(op, p.scalar_type(), p.shape, p.bits, p.group_size);
  check_packed_tensors(op, plan, p.codes, p.lo, p.scale);
}

int checked_index_width(const char* op, int64_t num_values) {
  TORCH_CHECK(num_values >= 1 && num_values <= 65536, op,
              ": num_values must be in [1, 65536], got ", num_values);
  return kernels::index_width(num_values);
}

void check_packed_stream(const char* op, const at::Tensor& packed, int64_t count, int width) {
  const int64_t bytes = kernels::packed_stream_bytes(count, width);
  TORCH_CHECK(packed.scalar_type() == c10::ScalarType::Byte && packed.dim() == 1 &&
                  packed.numel() == bytes,
              op, ": packed must be a 1-d uint8 tensor of ", bytes, " bytes (", count, " values of ",
              width, " bits), got ", packed.scalar_type(), " of shape ", packed.sizes());
}

QuantizeCall prepare_quantize(const at::Tensor& x, at::IntArrayRef bits, int64_t group_size,
                              int64_t seed, int64_t offset, const c10::optional<at::Tensor>& buffer,
                              int64_t alignment) {
  QuantizeCall c;
  c.plan = plan_quantize("actnn::quantize", x.scalar_type(), x.sizes(), bits, group_size);
  c.x = x.contiguous();
  const int64_t n = c.plan.geo.num_samples, p = c.plan.geo.groups_per_sample;
  if (buffer && buffer->defined()) {
    TORCH_CHECK(alignment > 0 && alignment % 8 == 0, "actnn::quantize: alignment must be a positive multiple of 8, got ",
                alignment);
    const int64_t meta = n * p * int64_t(c10::elementSize(c.plan.meta_dtype));
    const PackedSliceLayout layout = packedSliceLayout(c.plan.code_bytes, meta, alignment);
    const int64_t need = layout.bytes;
    TORCH_CHECK(buffer->scalar_type() == at::kByte && buffer->dim() == 1 && buffer->is_contiguous() &&
                    buffer->numel() >= need && buffer->device() == x.device(),
                "actnn::quantize: the output buffer must be a contiguous 1-d uint8 tensor of at least ", need,
                " bytes on ", x.device(), ", got ", buffer->scalar_type(), " of shape ", buffer->sizes(), " on ",
                buffer->device());
    c.codes = buffer->narrow(0, 0, c.plan.code_bytes);
    c.lo = buffer->narrow(0, layout.lo_at, meta).view(c.plan.meta_dtype).view({n, p});
    c.scale = buffer->narrow(0, layout.scale_at, meta).view(c.plan.meta_dtype).view({n, p});
  } else {
    c.codes = at::empty({c.plan.code_bytes}, x.options().dtype(at::kByte));
    c.lo = at::empty({n, p}, x.options().dtype(c.plan.meta_dtype));
    c.scale = at::empty_like(c.lo);
  }
  c.seed = uint64_t(seed);
  c.offset = uint64_t(offset);
  return c;
}

at::Tensor packed_output(const char* op, const c10::optional<at::Tensor>& out, int64_t bytes,
                         const at::Tensor& like) {
  if (!out || !out->defined()) return at::empty({bytes}, like.options().dtype(at::kByte));
  TORCH_CHECK(out->scalar_type() == at::kByte && out->dim() == 1 && out->is_contiguous() && out->numel() == bytes &&
                  out->device() == like.device(),
              op, ": out must be a contiguous 1-d uint8 tensor of ", bytes, " bytes on ", like.device(), ", got ",
              out->scalar_type(), " of shape ", out->sizes(), " on ", out->device());
  return *out;
}

namespace {
kernels::QuantGeometry host_geometry(const QuantPlan& plan) {
  kernels::QuantGeometry geo = plan.geo;
  geo.bits = plan.sample_bits.data();
  geo.byte_offset = plan.sample_offsets.data();
  return geo;
}
}  // namespace

kernels::QuantizeArgs QuantizeCall::args() const {
  kernels::QuantizeArgs a{x.data_ptr(),
                          plan.elem,
                          host_geometry(plan),
                          seed,
                          offset,
                          codes.data_ptr<uint8_t>(),
                          reinterpret_cast<uint16_t*>(lo.data_ptr()),
                          reinterpret_cast<uint16_t*>(scale.data_ptr())};
  a.ranges = ranges;
  return a;
}

DequantizeCall prepare_dequantize(const at::Tensor& codes, const at::Tensor& lo,
                                  const at::Tensor& scale, at::IntArrayRef bits,
                                  at::IntArrayRef shape, c10::ScalarType dtype, int64_t group_size,
                                  int64_t seed, int64_t offset, bool dither) {
  DequantizeCall c;
  c.dither = dither;
  c.seed = seed;
  c.offset = offset;
  c.plan = plan_quantize("actnn::dequantize", dtype, shape, bits, group_size);
  check_packed_tensors("actnn::dequantize", c.plan, codes, lo, scale);
  c.codes = codes.contiguous();
  c.lo = lo.contiguous();
  c.scale = scale.contiguous();
  c.out = at::empty(shape, codes.options().dtype(dtype));
  return c;
}

kernels::DequantizeArgs DequantizeCall::args() const {
  return kernels::DequantizeArgs{codes.data_ptr<uint8_t>(),
                                 reinterpret_cast<const uint16_t*>(lo.data_ptr()),
                                 reinterpret_cast<const uint16_t*>(scale.data_ptr()),
                                 host_geometry(plan),
                                 plan.elem,
                                 out.data_ptr(),
                                 dither,
                                 uint64_t(seed),
                                 uint64_t(offset)};
}

at::Tensor mask_bytes(const at::Tensor& mask) {
  return (mask.scalar_type() == at::kBool ? mask : mask.ne(0)).contiguous();
}

at::Tensor index_values(const at::Tensor& index, int64_t num_values, int* width) {
  *width = checked_index_width("actnn::pack_index", num_values);
  TORCH_CHECK(at::isIntegralType(index.scalar_type(), /*includeBool=*/false),
              "actnn::pack_index: index must be an integer tensor, got ", index.scalar_type());
  return index.to(at::kLong).contiguous();
}

}  // namespace actnn
