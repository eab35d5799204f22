// Max-pooling indices stored narrow. ATen's max_pool*_with_indices return,
// per output position, the flat offset of the maximum inside the input plane
// (int64, 8 bytes). Relative to its pooling window that offset takes one of
// prod(kernel) values, 4 bits for a 3x3 window: pack_pool_index converts to
// the window-relative index and packs it; unpack_pool_index converts back.
// Both are composite (ATen ops), so they run on any device.
#include <ATen/ATen.h>

#include "actnn/runtime/ops.h"
#include "checks.h"

namespace actnn {
namespace {

struct Window {
  std::vector<int64_t> in, kernel, stride, padding, dilation;  // per spatial dim
  int64_t count() const {
    int64_t c = 1;
    for (int64_t k : kernel) c *= k;
    return c;
  }
};

Window window(const char* op, at::IntArrayRef input_sizes, at::IntArrayRef kernel, at::IntArrayRef stride,
              at::IntArrayRef padding, at::IntArrayRef dilation) {
  const size_t k = kernel.size();
  TORCH_CHECK(k >= 1 && k <= 3 && input_sizes.size() >= k, op, ": expected 1 to 3 spatial dims, got kernel ",
              kernel, " for input ", input_sizes);
  auto expand = [&](at::IntArrayRef v, const char* name, int64_t def) {
    TORCH_CHECK(v.size() == k || v.size() == 1 || (v.empty() && def >= 0), op, ": ", name, " ", v,
                " does not match kernel ", kernel);
    std::vector<int64_t> out(k, v.empty() ? def : v[0]);
    if (v.size() == k) out.assign(v.begin(), v.end());
    return out;
  };
  Window w;
  w.kernel = kernel.vec();
  // An empty stride is ATen's default, the kernel (F.max_pool2d(x, 2) passes []).
  w.stride = stride.empty() ? w.kernel : expand(stride, "stride", -1);
  w.padding = expand(padding, "padding", 0);
  w.dilation = expand(dilation, "dilation", 1);
  w.in.assign(input_sizes.end() - k, input_sizes.end());
  return w;
}

// The first row of the window of every output position along spatial dim d,
// shaped to broadcast against indices [..., o_0, ..., o_{k-1}].
at::Tensor windowStart(const Window& w, const at::Tensor& indices, size_t d) {
  const size_t k = w.kernel.size();
  const int64_t out = indices.size(indices.dim() - int64_t(k) + int64_t(d));
  std::vector<int64_t> shape(k, 1);
  shape[d] = out;
  return (at::arange(out, indices.options().dtype(at::kLong)) * w.stride[d] - w.padding[d]).view(shape);
}

}  // namespace

at::Tensor pack_pool_index(const at::Tensor& indices, at::IntArrayRef input_sizes, at::IntArrayRef kernel,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                           const c10::optional<at::Tensor>& out) {
  const Window w = window("actnn::pack_pool_index", input_sizes, kernel, stride, padding, dilation);
  TORCH_CHECK(indices.scalar_type() == at::kLong && indices.dim() >= int64_t(w.kernel.size()),
              "actnn::pack_pool_index: indices must be int64 with the spatial dims last, got ", indices.scalar_type(),
              " of shape ", indices.sizes());
  at::Tensor rest = indices;
  at::Tensor relative = at::zeros_like(indices);
  // Row-major coordinates of the flat offset: the last spatial dim varies fastest.
  for (int64_t d = int64_t(w.kernel.size()) - 1; d >= 0; --d) {
    at::Tensor coord = rest.remainder(w.in[d]);
    rest = rest.div(w.in[d], "floor");
    at::Tensor tap = (coord - windowStart(w, indices, size_t(d))).div(w.dilation[d], "floor");
    int64_t inner = 1;
    for (size_t e = size_t(d) + 1; e < w.kernel.size(); ++e) inner *= w.kernel[e];
    relative += tap * inner;
  }
  // What is left is 0 for an offset inside the plane. It is not when the
  // geometry names fewer spatial dims than the pool has (max_pool2d with
  // kernel [3] means 3x3 to ATen): pushed out of range, so pack_index reports
  // it instead of storing a wrong index.
  relative += rest * w.count();
  return pack_index(relative, w.count(), out);
}

at::Tensor unpack_pool_index(const at::Tensor& packed, at::IntArrayRef output_sizes, at::IntArrayRef input_sizes,
                             at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation) {
  const Window w = window("actnn::unpack_pool_index", input_sizes, kernel, stride, padding, dilation);
  at::Tensor relative = unpack_index(packed, w.count(), output_sizes);
  at::Tensor flat = at::zeros_like(relative);
  for (size_t d = 0; d < w.kernel.size(); ++d) {
    int64_t inner = 1;
    for (size_t e = d + 1; e < w.kernel.size(); ++e) inner *= w.kernel[e];
    at::Tensor tap = relative.div(inner, "floor").remainder(w.kernel[d]);
    flat = flat * w.in[d] + windowStart(w, relative, d) + tap * w.dilation[d];
  }
  return flat;
}

int64_t pool_index_bytes(int64_t count, at::IntArrayRef kernel) {
  int64_t values = 1;
  for (int64_t k : kernel) values *= k;
  return kernels::packed_stream_bytes(count, checked_index_width("actnn::pack_pool_index", values));
}

}  // namespace actnn
