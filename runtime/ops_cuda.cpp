// CUDA kernels of the actnn:: ops (schemas in ops.cpp). Compiled only when the
// LibTorch in use has CUDA. Each op is one launch on the current stream with
// no host synchronization; per-sample tables of mixed-precision codes reach
// the device through a pinned, non-blocking copy on that stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstring>

#include "actnn/kernels/cuda.h"
#include "checks.h"

namespace actnn {
namespace {

void check_launch(const char* op, int error) {
  TORCH_CHECK(error == 0, op, ": CUDA kernel launch failed: ", kernels::cuda_error_name(error));
}

void* current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Copies the per-sample offsets and widths of a mixed-precision plan to the
// device and points `geo` at them. The returned tensor owns the device copy
// and must outlive the launch (the caching allocator keeps it for the stream).
at::Tensor device_tables(const QuantPlan& plan, const at::Device& device,
                         kernels::QuantGeometry* geo) {
  if (plan.geo.uniform_bits > 0) return at::Tensor();
  const int64_t n = plan.geo.num_samples;
  at::Tensor host = at::empty({n * 9}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::memcpy(host.data_ptr(), plan.sample_offsets.data(), size_t(n) * 8);
  std::memcpy(host.data_ptr<uint8_t>() + n * 8, plan.sample_bits.data(), size_t(n));
  at::Tensor dev = host.to(device, /*non_blocking=*/true);
  geo->byte_offset = reinterpret_cast<const int64_t*>(dev.data_ptr());
  geo->bits = dev.data_ptr<uint8_t>() + n * 8;
  return dev;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_groups_cuda(const at::Tensor& x,
                                                                     at::IntArrayRef bits,
                                                                     int64_t group_size,
                                                                     int64_t seed, int64_t offset,
                                                                     const c10::optional<at::Tensor>& buffer,
                                                                     int64_t alignment) {
  const c10::cuda::CUDAGuard guard(x.device());
  QuantizeCall c = prepare_quantize(x, bits, group_size, seed, offset, buffer, alignment);
  kernels::QuantizeArgs a = c.args();
  const at::Tensor tables = device_tables(c.plan, x.device(), &a.geo);
  check_launch("actnn::quantize", kernels::quantize_cuda(a, current_stream()));
  return {c.codes, c.lo, c.scale};
}

at::Tensor dequantize_groups_cuda(const at::Tensor& codes, const at::Tensor& lo,
                                  const at::Tensor& scale, at::IntArrayRef bits,
                                  at::IntArrayRef shape, c10::ScalarType dtype, int64_t group_size,
                                 int64_t seed, int64_t offset, bool dither) {
  const c10::cuda::CUDAGuard guard(codes.device());
  DequantizeCall c = prepare_dequantize(codes, lo, scale, bits, shape, dtype, group_size, seed, offset, dither);
  kernels::DequantizeArgs a = c.args();
  const at::Tensor tables = device_tables(c.plan, codes.device(), &a.geo);
  check_launch("actnn::dequantize", kernels::dequantize_cuda(a, current_stream()));
  return c.out;
}

at::Tensor pack_mask_into_cuda(const at::Tensor& mask, const c10::optional<at::Tensor>& into) {
  const c10::cuda::CUDAGuard guard(mask.device());
  const at::Tensor m = mask_bytes(mask);
  at::Tensor out = packed_output("actnn::pack_mask", into, (m.numel() + 7) / 8, m);
  check_launch("actnn::pack_mask",
               kernels::pack_mask_cuda(reinterpret_cast<const uint8_t*>(m.data_ptr()), m.numel(),
                                       out.data_ptr<uint8_t>(), current_stream()));
  return out;
}

at::Tensor unpack_mask_cuda(const at::Tensor& packed, at::IntArrayRef shape) {
  const c10::cuda::CUDAGuard guard(packed.device());
  at::Tensor out = at::empty(shape, packed.options().dtype(at::kBool));
  check_packed_stream("actnn::unpack_mask", packed, out.numel(), 1);
  const at::Tensor p = packed.contiguous();
  check_launch("actnn::unpack_mask",
               kernels::unpack_mask_cuda(p.data_ptr<uint8_t>(), out.numel(),
                                         reinterpret_cast<uint8_t*>(out.data_ptr()),
                                         current_stream()));
  return out;
}

// An index outside [0, num_values) stops the kernel with a device assert (as
// PyTorch's indexing kernels do): checking it on the host would need a sync.
at::Tensor pack_index_into_cuda(const at::Tensor& index, int64_t num_values, const c10::optional<at::Tensor>& into) {
  const c10::cuda::CUDAGuard guard(index.device());
  int w = 0;
  const at::Tensor idx = index_values(index, num_values, &w);
  at::Tensor out = packed_output("actnn::pack_index", into, kernels::packed_stream_bytes(idx.numel(), w), idx);
  check_launch("actnn::pack_index",
               kernels::pack_index_cuda(idx.data_ptr<int64_t>(), idx.numel(), num_values, w,
                                        out.data_ptr<uint8_t>(), current_stream()));
  return out;
}

at::Tensor unpack_index_cuda(const at::Tensor& packed, int64_t num_values, at::IntArrayRef shape) {
  const c10::cuda::CUDAGuard guard(packed.device());
  const int w = checked_index_width("actnn::unpack_index", num_values);
  at::Tensor out = at::empty(shape, packed.options().dtype(at::kLong));
  check_packed_stream("actnn::unpack_index", packed, out.numel(), w);
  const at::Tensor p = packed.contiguous();
  check_launch("actnn::unpack_index",
               kernels::unpack_index_cuda(p.data_ptr<uint8_t>(), out.numel(), w,
                                          out.data_ptr<int64_t>(), current_stream()));
  return out;
}

at::Tensor pack_mask_cuda(const at::Tensor& mask) { return pack_mask_into_cuda(mask, c10::nullopt); }
at::Tensor pack_mask_out_cuda(const at::Tensor& mask, at::Tensor& out) { return pack_mask_into_cuda(mask, out); }
at::Tensor pack_index_cuda(const at::Tensor& index, int64_t num_values) {
  return pack_index_into_cuda(index, num_values, c10::nullopt);
}
at::Tensor pack_index_out_cuda(const at::Tensor& index, int64_t num_values, at::Tensor& out) {
  return pack_index_into_cuda(index, num_values, out);
}

}  // namespace

TORCH_LIBRARY_IMPL(actnn, CUDA, m) {
  m.impl("quantize_groups", quantize_groups_cuda);
  m.impl("dequantize_groups", dequantize_groups_cuda);
  m.impl("pack_mask", pack_mask_cuda);
  m.impl("pack_mask.out", pack_mask_out_cuda);
  m.impl("unpack_mask", unpack_mask_cuda);
  m.impl("pack_index", pack_index_cuda);
  m.impl("pack_index.out", pack_index_out_cuda);
  m.impl("unpack_index", unpack_index_cuda);
}

}  // namespace actnn
