// Max-pooling indices stored narrow. ATen's max_pool*_with_indices return,
// per output position, the flat offset of the maximum inside the input plane
// (int64, 8 bytes). Relative to its pooling window that offset takes one of
// prod(kernel) values, 4 bits for a 3x3 window: pack_pool_index converts to
// the window-relative index and packs it; unpack_pool_index converts back.
// On the CPU both are one pass over the values (no int64 temporaries: the
// backward graph calls unpack_pool_index where memory is tightest); on other
// devices they are composite ATen ops.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>

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

// The one-pass CPU path divides in 32 bits: input planes below 2^32 values.
bool planeFits32(const Window& w) {
  int64_t plane = 1;
  for (int64_t v : w.in) plane *= v;
  return plane < (int64_t(1) << 32);
}

// The geometry with 3 spatial dims (missing leading ones have size 1).
struct Geometry3 {
  int64_t in[3], out[3], k[3], s[3], p[3], dl[3];
  int64_t plane_in = 1, plane_out = 1;
};

Geometry3 geometry3(const Window& w, at::IntArrayRef output_sizes) {
  Geometry3 g;
  const size_t k = w.kernel.size(), lead = 3 - k;
  for (size_t d = 0; d < 3; ++d) {
    const bool real = d >= lead;
    const size_t i = d - lead;
    g.in[d] = real ? w.in[i] : 1;
    g.out[d] = real ? output_sizes[output_sizes.size() - k + i] : 1;
    g.k[d] = real ? w.kernel[i] : 1;
    g.s[d] = real ? w.stride[i] : 1;
    g.p[d] = real ? w.padding[i] : 0;
    g.dl[d] = real ? w.dilation[i] : 1;
    g.plane_in *= g.in[d];
    g.plane_out *= g.out[d];
  }
  return g;
}

void outputPosition(const Geometry3& g, int64_t e, int64_t o[3]) {
  const int64_t q = e % g.plane_out;
  o[2] = q % g.out[2];
  o[1] = (q / g.out[2]) % g.out[1];
  o[0] = q / (g.out[2] * g.out[1]);
}

// The next output position in row-major order (wrapping to the next plane).
inline void advance(const Geometry3& g, int64_t o[3]) {
  if (++o[2] < g.out[2]) return;
  o[2] = 0;
  if (++o[1] < g.out[1]) return;
  o[1] = 0;
  if (++o[0] == g.out[0]) o[0] = 0;
}

// The window-relative index of flat input offset f at output position o, or
// -1 when f is not a tap of that window. The coordinates are divided out in
// 32 bits (planes are far below 2^32 values), which is several times faster.
int64_t relativeOf(const Geometry3& g, int64_t f, const int64_t o[3]) {
  if (f < 0 || f >= g.plane_in) return -1;
  const uint32_t u = uint32_t(f), in1 = uint32_t(g.in[1]), in2 = uint32_t(g.in[2]);
  const uint32_t row = u / in2;
  const int64_t c[3] = {int64_t(row / in1), int64_t(row % in1), int64_t(u - row * in2)};
  int64_t rel = 0;
  for (int d = 0; d < 3; ++d) {
    const int64_t off = c[d] - (o[d] * g.s[d] - g.p[d]);
    if (off < 0 || off % g.dl[d] != 0 || off / g.dl[d] >= g.k[d]) return -1;
    rel = rel * g.k[d] + off / g.dl[d];
  }
  return rel;
}

int64_t flatOf(const Geometry3& g, int64_t rel, const int64_t o[3]) {
  const uint32_t r = uint32_t(rel), k1 = uint32_t(g.k[1]), k2 = uint32_t(g.k[2]);
  const uint32_t row = r / k2;
  const int64_t t[3] = {int64_t(row / k1), int64_t(row % k1), int64_t(r - row * k2)};
  int64_t f = 0;
  for (int d = 0; d < 3; ++d) f = f * g.in[d] + o[d] * g.s[d] - g.p[d] + t[d] * g.dl[d];
  return f;
}

at::Tensor packPoolIndexCpu(const at::Tensor& indices, const Window& w, const c10::optional<at::Tensor>& out) {
  const at::Tensor idx = indices.contiguous();
  const Geometry3 g = geometry3(w, idx.sizes());
  const int64_t n = idx.numel(), count = w.count();
  const int width = checked_index_width("actnn::pack_pool_index", count);
  at::Tensor packed = packed_output("actnn::pack_pool_index", out, kernels::packed_stream_bytes(n, width), idx);
  const int64_t* src = idx.data_ptr<int64_t>();
  uint8_t* dst = packed.data_ptr<uint8_t>();
  // Chunks of whole 8-value runs, so each packs into its own bytes.
  constexpr int64_t kChunk = 8192;
  std::atomic<int64_t> first_bad{n};
  at::parallel_for(0, (n + kChunk - 1) / kChunk, 1, [&](int64_t b, int64_t e) {
    std::vector<int64_t> rel(kChunk);
    for (int64_t chunk = b; chunk < e; ++chunk) {
      const int64_t start = chunk * kChunk, len = std::min(kChunk, n - start);
      int64_t o[3];
      outputPosition(g, start, o);
      for (int64_t i = 0; i < len; ++i, advance(g, o)) {
        rel[i] = relativeOf(g, src[start + i], o);
        if (rel[i] < 0) {
          int64_t seen = first_bad.load();
          while (start + i < seen && !first_bad.compare_exchange_weak(seen, start + i)) {
          }
          rel[i] = 0;
        }
      }
      kernels::pack_index_cpu(rel.data(), len, count, width, dst + start / 8 * width);
    }
  });
  const int64_t bad = first_bad.load();
  TORCH_CHECK(bad == n, "actnn::pack_pool_index: index (flattened) [", bad, "] = ", bad < n ? src[bad] : 0,
              " is not a tap of its pooling window: its window-relative index is outside [0, ", count, ")");
  return packed;
}

at::Tensor unpackPoolIndexCpu(const at::Tensor& packed, at::IntArrayRef output_sizes, const Window& w) {
  const int64_t count = w.count();
  const int width = checked_index_width("actnn::unpack_pool_index", count);
  at::Tensor flat = at::empty(output_sizes, packed.options().dtype(at::kLong));
  check_packed_stream("actnn::unpack_pool_index", packed, flat.numel(), width);
  const Geometry3 g = geometry3(w, output_sizes);
  int64_t* dst = flat.data_ptr<int64_t>();
  const int64_t n = flat.numel();
  kernels::unpack_index_cpu(packed.contiguous().data_ptr<uint8_t>(), n, width, dst);
  std::atomic<int64_t> first_bad{n};
  at::parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    int64_t o[3];
    outputPosition(g, b, o);
    for (int64_t i = b; i < e; ++i, advance(g, o)) {
      if (dst[i] >= count) {
        int64_t seen = first_bad.load();
        while (i < seen && !first_bad.compare_exchange_weak(seen, i)) {
        }
        continue;
      }
      dst[i] = flatOf(g, dst[i], o);
    }
  });
  TORCH_CHECK(first_bad.load() == n, "actnn::unpack_pool_index: packed index [", first_bad.load(),
              "] is outside [0, ", count, "): the stream is corrupted");
  return flat;
}

}  // namespace

at::Tensor pack_pool_index(const at::Tensor& indices, at::IntArrayRef input_sizes, at::IntArrayRef kernel,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                           const c10::optional<at::Tensor>& out) {
  const Window w = window("actnn::pack_pool_index", input_sizes, kernel, stride, padding, dilation);
  TORCH_CHECK(indices.scalar_type() == at::kLong && indices.dim() >= int64_t(w.kernel.size()),
              "actnn::pack_pool_index: indices must be int64 with the spatial dims last, got ", indices.scalar_type(),
              " of shape ", indices.sizes());
  if (indices.device().is_cpu() && planeFits32(w)) return packPoolIndexCpu(indices, w, out);
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
  TORCH_CHECK(output_sizes.size() >= w.kernel.size(), "actnn::unpack_pool_index: output_sizes ", output_sizes,
              " has fewer dims than the kernel ", w.kernel);
  if (packed.device().is_cpu() && planeFits32(w)) return unpackPoolIndexCpu(packed, output_sizes, w);
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
