// CPU kernels of the actnn:: ops (schemas in ops.cpp; argument checks and
// output allocation shared with CUDA in checks.cpp).
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/library.h>

#include "actnn/kernels/kernels.h"
#include "checks.h"

namespace actnn {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_groups_cpu(const at::Tensor& x,
                                                                    at::IntArrayRef bits,
                                                                    int64_t group_size,
                                                                    int64_t seed, int64_t offset,
                                                                    const c10::optional<at::Tensor>& buffer,
                                                                    int64_t alignment) {
  QuantizeCall c = prepare_quantize(x, bits, group_size, seed, offset, buffer, alignment);
  kernels::quantize_cpu(c.args());
  return {c.codes, c.lo, c.scale};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_groups_cpu_with_ranges(
    const at::Tensor& x, at::IntArrayRef bits, int64_t group_size, int64_t seed, int64_t offset,
    const c10::optional<at::Tensor>& buffer, int64_t alignment, const std::vector<float>& ranges) {
  RECORD_FUNCTION("actnn::quantize_groups", std::vector<c10::IValue>{x});
  TORCH_CHECK(x.device().is_cpu(), "actnn::quantize_groups: ranges are a CPU path, got ", x.device());
  QuantizeCall c = prepare_quantize(x, bits, group_size, seed, offset, buffer, alignment);
  const int64_t groups = c.plan.geo.num_samples * c.plan.geo.groups_per_sample;
  TORCH_CHECK(int64_t(ranges.size()) == 2 * groups, "actnn::quantize_groups: expected ", 2 * groups,
              " range values (2 per group), got ", ranges.size());
  c.ranges = ranges.data();
  kernels::quantize_cpu(c.args());
  return {c.codes, c.lo, c.scale};
}

namespace {

at::Tensor dequantize_groups_cpu(const at::Tensor& codes, const at::Tensor& lo,
                                 const at::Tensor& scale, at::IntArrayRef bits,
                                 at::IntArrayRef shape, c10::ScalarType dtype, int64_t group_size,
                                 int64_t seed, int64_t offset, bool dither) {
  DequantizeCall c = prepare_dequantize(codes, lo, scale, bits, shape, dtype, group_size, seed, offset, dither);
  kernels::dequantize_cpu(c.args());
  return c.out;
}

at::Tensor pack_mask_into_cpu(const at::Tensor& mask, const c10::optional<at::Tensor>& into) {
  if (mask.scalar_type() == at::kFloat) {  // a relu output's "!= 0", with no bool tensor in between
    const at::Tensor m = mask.contiguous();
    at::Tensor out = packed_output("actnn::pack_mask", into, (m.numel() + 7) / 8, m);
    kernels::pack_nonzero_cpu(m.data_ptr<float>(), m.numel(), out.data_ptr<uint8_t>());
    return out;
  }
  const at::Tensor m = mask_bytes(mask);
  at::Tensor out = packed_output("actnn::pack_mask", into, (m.numel() + 7) / 8, m);
  kernels::pack_mask_cpu(reinterpret_cast<const uint8_t*>(m.data_ptr()), m.numel(),
                         out.data_ptr<uint8_t>());
  return out;
}

at::Tensor unpack_mask_cpu(const at::Tensor& packed, at::IntArrayRef shape) {
  at::Tensor out = at::empty(shape, packed.options().dtype(at::kBool));
  check_packed_stream("actnn::unpack_mask", packed, out.numel(), 1);
  const at::Tensor p = packed.contiguous();
  kernels::unpack_mask_cpu(p.data_ptr<uint8_t>(), out.numel(),
                           reinterpret_cast<uint8_t*>(out.data_ptr()));
  return out;
}

at::Tensor pack_index_into_cpu(const at::Tensor& index, int64_t num_values, const c10::optional<at::Tensor>& into) {
  int w = 0;
  const at::Tensor idx = index_values(index, num_values, &w);
  at::Tensor out = packed_output("actnn::pack_index", into, kernels::packed_stream_bytes(idx.numel(), w), idx);
  const int64_t* v = idx.data_ptr<int64_t>();
  const int64_t bad = kernels::pack_index_cpu(v, idx.numel(), num_values, w, out.data_ptr<uint8_t>());
  TORCH_CHECK(bad < 0, "actnn::pack_index: index (flattened) [", bad, "] = ", v[bad < 0 ? 0 : bad],
              " is outside [0, ", num_values, ")");
  return out;
}

at::Tensor unpack_index_cpu(const at::Tensor& packed, int64_t num_values, at::IntArrayRef shape) {
  const int w = checked_index_width("actnn::unpack_index", num_values);
  at::Tensor out = at::empty(shape, packed.options().dtype(at::kLong));
  check_packed_stream("actnn::unpack_index", packed, out.numel(), w);
  const at::Tensor p = packed.contiguous();
  kernels::unpack_index_cpu(p.data_ptr<uint8_t>(), out.numel(), w, out.data_ptr<int64_t>());
  return out;
}

at::Tensor pack_mask_cpu(const at::Tensor& mask) { return pack_mask_into_cpu(mask, c10::nullopt); }
at::Tensor pack_mask_out_cpu(const at::Tensor& mask, at::Tensor& out) { return pack_mask_into_cpu(mask, out); }
at::Tensor pack_index_cpu(const at::Tensor& index, int64_t num_values) {
  return pack_index_into_cpu(index, num_values, c10::nullopt);
}
at::Tensor pack_index_out_cpu(const at::Tensor& index, int64_t num_values, at::Tensor& out) {
  return pack_index_into_cpu(index, num_values, out);
}

}  // namespace

TORCH_LIBRARY_IMPL(actnn, CPU, m) {
  m.impl("quantize_groups", quantize_groups_cpu);
  m.impl("dequantize_groups", dequantize_groups_cpu);
  m.impl("pack_mask", pack_mask_cpu);
  m.impl("pack_mask.out", pack_mask_out_cpu);
  m.impl("unpack_mask", unpack_mask_cpu);
  m.impl("pack_index", pack_index_cpu);
  m.impl("pack_index.out", pack_index_out_cpu);
  m.impl("unpack_index", unpack_index_cpu);
}

}  // namespace actnn
