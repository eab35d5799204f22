// Max-pooling argmax indices stored narrow (runtime/pool_index.cpp):
// pack_pool_index / unpack_pool_index return exactly the indices of
// aten::max_pool2d_with_indices and max_pool3d_with_indices, for every
// geometry ATen takes, in ceil(numel * w / 8) bytes with w = index_width(K) =
// max(1, ceil(log2 K)) bits and K = prod(kernel) (a 1x1 window still takes
// one bit).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "actnn/runtime/ops.h"
#include "test_util.h"

namespace actnn {
namespace {

struct Geometry {
  std::string name;
  std::vector<int64_t> input;  // [N, C, spatial...] or [C, spatial...]
  std::vector<int64_t> kernel, stride, padding, dilation;
  bool ceil_mode = false;
  bool channels_last = false;
};

std::ostream& operator<<(std::ostream& os, const Geometry& g) { return os << g.name; }

int64_t windowSize(const std::vector<int64_t>& kernel, size_t spatial) {
  int64_t k = 1;
  for (size_t d = 0; d < spatial; ++d) k *= kernel.size() == 1 ? kernel[0] : kernel[d];
  return k;
}

// The fewest bits that hold K values, at least 1: what pack_index uses.
int64_t indexBits(int64_t k) { return std::max<int64_t>(1, int64_t(std::ceil(std::log2(double(k))))); }

at::Tensor poolInput(const Geometry& g) {
  at::Generator gen = at::detail::createCPUGenerator(17);
  // ReLU'd normals: ties (zeros) inside windows as well as distinct maxima.
  at::Tensor x = at::relu(at::randn(g.input, gen));
  if (g.channels_last)
    x = x.contiguous(g.input.size() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d);
  return x;
}

std::tuple<at::Tensor, at::Tensor> pool(const Geometry& g, const at::Tensor& x, size_t spatial) {
  if (spatial == 2) return at::max_pool2d_with_indices(x, g.kernel, g.stride, g.padding, g.dilation, g.ceil_mode);
  return at::max_pool3d_with_indices(x, g.kernel, g.stride, g.padding, g.dilation, g.ceil_mode);
}

void expectRoundTrip(const Geometry& g, size_t spatial) {
  const at::Tensor x = poolInput(g);
  const auto [out, indices] = pool(g, x, spatial);
  ASSERT_GT(indices.numel(), 0);
  const at::Tensor packed = pack_pool_index(indices, x.sizes(), g.kernel, g.stride, g.padding, g.dilation);
  const int64_t bits = indexBits(windowSize(g.kernel, spatial));
  EXPECT_EQ(packed.scalar_type(), at::kByte);
  EXPECT_EQ(packed.numel(), (indices.numel() * bits + 7) / 8) << bits << " bits per index";
  const at::Tensor back =
      unpack_pool_index(packed, indices.sizes(), x.sizes(), g.kernel, g.stride, g.padding, g.dilation);
  EXPECT_EQ(back.scalar_type(), at::kLong);
  ASSERT_EQ(back.sizes(), indices.sizes());
  EXPECT_TRUE(at::equal(back, indices)) << "indices differ at " << at::nonzero(back != indices)[0];
  // Hence the same gradient from max_pool*_with_indices_backward.
  const at::Tensor grad = at::randn(out.sizes());
  auto backward = [&](const at::Tensor& idx) {
    return spatial == 2 ? at::max_pool2d_with_indices_backward(grad, x, g.kernel, g.stride, g.padding, g.dilation,
                                                               g.ceil_mode, idx)
                        : at::max_pool3d_with_indices_backward(grad, x, g.kernel, g.stride, g.padding, g.dilation,
                                                               g.ceil_mode, idx);
  };
  EXPECT_TRUE(at::equal(backward(back), backward(indices)));
}

class PoolIndex2d : public ::testing::TestWithParam<Geometry> {};
class PoolIndex3d : public ::testing::TestWithParam<Geometry> {};

TEST_P(PoolIndex2d, RoundTripsMaxPoolIndicesExactly) { expectRoundTrip(GetParam(), 2); }
TEST_P(PoolIndex3d, RoundTripsMaxPoolIndicesExactly) { expectRoundTrip(GetParam(), 3); }

INSTANTIATE_TEST_SUITE_P(
    Geometries, PoolIndex2d,
    ::testing::Values(
        Geometry{"k2_stride_is_kernel", {2, 3, 8, 8}, {2, 2}, {2, 2}, {0, 0}, {1, 1}},
        Geometry{"k3_s2_p1", {2, 3, 9, 9}, {3, 3}, {2, 2}, {1, 1}, {1, 1}},
        Geometry{"k3_s1_overlapping", {1, 2, 7, 6}, {3, 3}, {1, 1}, {0, 0}, {1, 1}},
        Geometry{"k3_s2_dilation2_p1", {2, 2, 11, 10}, {3, 3}, {2, 2}, {1, 1}, {2, 2}},
        Geometry{"rect_k2x3_s1x2_p1x0_d1x2", {2, 3, 8, 13}, {2, 3}, {1, 2}, {1, 0}, {1, 2}},
        Geometry{"k3_s2_ceil_mode", {2, 3, 10, 10}, {3, 3}, {2, 2}, {0, 0}, {1, 1}, true},
        Geometry{"k2_ceil_mode_odd", {2, 3, 9, 7}, {2, 2}, {2, 2}, {0, 0}, {1, 1}, true},
        Geometry{"k3_s2_p1_ceil_mode_dilation", {1, 2, 12, 12}, {3, 3}, {2, 2}, {1, 1}, {2, 2}, true},
        Geometry{"k1x1", {2, 3, 5, 5}, {1, 1}, {1, 1}, {0, 0}, {1, 1}},
        Geometry{"k4x4_s3", {2, 2, 13, 13}, {4, 4}, {3, 3}, {1, 1}, {1, 1}},
        Geometry{"k5x5_s2_p2", {1, 2, 12, 11}, {5, 5}, {2, 2}, {2, 2}, {1, 1}},
        Geometry{"default_stride", {2, 3, 9, 9}, {3, 3}, {}, {0, 0}, {1, 1}},
        Geometry{"scalar_lists", {2, 3, 9, 9}, {3, 3}, {2}, {1}, {1}},
        Geometry{"unbatched", {3, 9, 9}, {3, 3}, {2, 2}, {1, 1}, {1, 1}},
        Geometry{"channels_last", {2, 5, 9, 9}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false, true},
        Geometry{"channels_last_ceil_dilation", {2, 4, 10, 11}, {2, 3}, {2, 1}, {1, 1}, {2, 1}, true, true}),
    [](const ::testing::TestParamInfo<Geometry>& info) { return info.param.name; });

INSTANTIATE_TEST_SUITE_P(
    Geometries, PoolIndex3d,
    ::testing::Values(
        Geometry{"k2_stride_is_kernel", {2, 2, 6, 6, 6}, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}, {1, 1, 1}},
        Geometry{"k3_s2_p1", {2, 2, 7, 7, 7}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}},
        Geometry{"k133_s122_p011_d122", {2, 4, 4, 9, 9}, {1, 3, 3}, {1, 2, 2}, {0, 1, 1}, {1, 2, 2}},
        Geometry{"k2_ceil_mode", {1, 2, 5, 7, 6}, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}, {1, 1, 1}, true},
        Geometry{"rect_ceil_dilation", {1, 2, 8, 7, 9}, {2, 3, 2}, {2, 1, 3}, {1, 1, 0}, {2, 1, 1}, true},
        Geometry{"default_stride", {1, 2, 6, 6, 6}, {3, 3, 3}, {}, {0, 0, 0}, {1, 1, 1}},
        Geometry{"unbatched", {2, 6, 6, 6}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}},
        Geometry{"channels_last", {2, 3, 6, 6, 6}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, false, true}),
    [](const ::testing::TestParamInfo<Geometry>& info) { return info.param.name; });

// The packed stream's width is index_width(prod(kernel)): 1 bit for a 1x1 or
// 2-value window, then ceil(log2 K).
TEST(PoolIndex, PackedWidthIsTheFewestBitsForTheWindow) {
  const std::pair<std::vector<int64_t>, int64_t> cases[] = {
      {{1, 1}, 1}, {{1, 2}, 1}, {{2, 2}, 2}, {{2, 3}, 3}, {{3, 3}, 4}, {{4, 4}, 4}, {{3, 6}, 5}, {{5, 5}, 5}};
  for (const auto& [kernel, bits] : cases) {
    const at::Tensor x = at::randn({1, 1, 30, 30});
    const auto [out, indices] = at::max_pool2d_with_indices(x, kernel, kernel, {0, 0}, {1, 1}, false);
    const at::Tensor packed = pack_pool_index(indices, x.sizes(), kernel, kernel, {0, 0}, {1, 1});
    EXPECT_EQ(packed.numel(), (indices.numel() * bits + 7) / 8) << "kernel " << kernel[0] << "x" << kernel[1];
  }
  // 3x3x3 = 27 values: 5 bits, 8 indices in 5 bytes.
  const at::Tensor x = at::randn({1, 1, 6, 6, 6});
  const auto [out, indices] = at::max_pool3d_with_indices(x, {3, 3, 3}, {3, 3, 3}, {0, 0, 0}, {1, 1, 1}, false);
  ASSERT_EQ(indices.numel(), 8);
  EXPECT_EQ(pack_pool_index(indices, x.sizes(), {3, 3, 3}, {3, 3, 3}, {0, 0, 0}, {1, 1, 1}).numel(), 5);
}

// ATen broadcasts a kernel list of one to every spatial dim (max_pool2d with
// kernel [3] pools 3x3; scripted F.max_pool2d(x, [3]) and nn.MaxPool2d([3])
// pass it so), but pack_pool_index takes the spatial dims from the kernel's
// length and cannot tell a 3x3 pool from a 3-wide one over the last dim: the
// offsets left over beyond that dim make it refuse, rather than store wrong
// indices. (Compiled modules need insert-compression to pass the kernel per
// spatial dim; see the report.)
TEST(PoolIndex, KernelListOfOneForAPlanePoolIsRefused) {
  const at::Tensor x = at::randn({2, 3, 9, 9});
  const auto [out, indices] = at::max_pool2d_with_indices(x, {3}, {2}, {1}, {1}, false);
  test::expect_error([&] { pack_pool_index(indices, x.sizes(), {3}, {2}, {1}, {1}); }, "is outside [0, 3)");
  const at::Tensor v = at::randn({2, 2, 7, 7, 7});
  const auto [out3, indices3] = at::max_pool3d_with_indices(v, {2}, {}, {0}, {1}, false);
  test::expect_error([&] { pack_pool_index(indices3, v.sizes(), {2}, {}, {0}, {1}); }, "is outside [0, 2)");
  // Spelled per dim, the same pools round-trip.
  const at::Tensor packed = pack_pool_index(indices, x.sizes(), {3, 3}, {2, 2}, {1, 1}, {1, 1});
  EXPECT_TRUE(at::equal(unpack_pool_index(packed, indices.sizes(), x.sizes(), {3, 3}, {2, 2}, {1, 1}, {1, 1}), indices));
}

// A 1-d window over the last dim of a [N, C, L] input (what a kernel of one
// entry does mean to pack_pool_index) round-trips.
TEST(PoolIndex, OneSpatialDim) {
  const at::Tensor x = at::randn({2, 3, 1, 20});
  const auto [out, indices] = at::max_pool2d_with_indices(x, {1, 4}, {1, 3}, {0, 1}, {1, 2}, true);
  const at::Tensor flat = indices.squeeze(2);
  const at::Tensor packed = pack_pool_index(flat, {2, 3, 20}, {4}, {3}, {1}, {2});
  EXPECT_EQ(packed.numel(), (flat.numel() * 2 + 7) / 8);
  EXPECT_TRUE(at::equal(unpack_pool_index(packed, flat.sizes(), {2, 3, 20}, {4}, {3}, {1}, {2}), flat));
}

// The registered ops are the same functions.
TEST(PoolIndex, ReachableThroughTheDispatcher) {
  const at::Tensor x = at::randn({2, 3, 9, 9});
  const auto [out, indices] = at::max_pool2d_with_indices(x, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false);
  auto pack = c10::Dispatcher::singleton()
                  .findSchemaOrThrow("actnn::pack_pool_index", "")
                  .typed<at::Tensor(const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                                    at::IntArrayRef, at::IntArrayRef)>();
  auto unpack = c10::Dispatcher::singleton()
                    .findSchemaOrThrow("actnn::unpack_pool_index", "")
                    .typed<at::Tensor(const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                                      at::IntArrayRef, at::IntArrayRef, at::IntArrayRef)>();
  const at::Tensor packed = pack.call(indices, x.sizes(), {3, 3}, {2, 2}, {1, 1}, {1, 1});
  EXPECT_TRUE(at::equal(packed, pack_pool_index(indices, x.sizes(), {3, 3}, {2, 2}, {1, 1}, {1, 1})));
  EXPECT_TRUE(at::equal(unpack.call(packed, indices.sizes(), x.sizes(), {3, 3}, {2, 2}, {1, 1}, {1, 1}), indices));
}

TEST(PoolIndex, BadArgumentsAreReported) {
  const at::Tensor x = at::randn({2, 3, 9, 9});
  const auto [out, indices] = at::max_pool2d_with_indices(x, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false);
  test::expect_error([&] { pack_pool_index(indices.to(at::kInt), x.sizes(), {3, 3}, {2, 2}, {1, 1}, {1, 1}); },
                     "indices must be int64");
  test::expect_error([&] { pack_pool_index(indices, x.sizes(), {3, 3}, {2, 2, 2}, {1, 1}, {1, 1}); },
                     "stride [2, 2, 2] does not match kernel [3, 3]");
  test::expect_error([&] { pack_pool_index(indices, x.sizes(), {1, 3, 3, 3}, {}, {0}, {1}); },
                     "expected 1 to 3 spatial dims");
  // A wrong geometry is caught when an index leaves its window.
  test::expect_error([&] { pack_pool_index(indices, x.sizes(), {2, 2}, {2, 2}, {1, 1}, {1, 1}); },
                     "is outside [0, 4)");
  const at::Tensor packed = pack_pool_index(indices, x.sizes(), {3, 3}, {2, 2}, {1, 1}, {1, 1});
  test::expect_error(
      [&] { unpack_pool_index(packed.narrow(0, 0, 3), indices.sizes(), x.sizes(), {3, 3}, {2, 2}, {1, 1}, {1, 1}); },
      "packed must be a 1-d uint8 tensor");
}

}  // namespace
}  // namespace actnn
