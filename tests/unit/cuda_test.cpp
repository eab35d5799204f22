// CUDA kernels against the CPU kernels: byte-identical output for the same
// seed, and the CUDA-only paths (more groups than a grid dimension holds).
// Every test skips cleanly where no GPU (or no CUDA LibTorch) is present.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "actnn/runtime/ops.h"
#include "actnn/runtime/swap.h"
#include "test_util.h"

namespace actnn {
namespace {

#define REQUIRE_CUDA()                                                              \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device in this process"

at::Tensor randn(at::IntArrayRef shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen);
}

void expect_same_bytes(const at::Tensor& x, std::vector<int64_t> bits, int64_t G) {
  const auto cpu = quantize(x, bits, G, 77, 5);
  const auto gpu = quantize(x.cuda(), bits, G, 77, 5);
  EXPECT_TRUE(gpu->codes.is_cuda());
  EXPECT_TRUE(test::bytes_equal(cpu->codes, gpu->codes));
  EXPECT_TRUE(test::bytes_equal(cpu->lo, gpu->lo));
  EXPECT_TRUE(test::bytes_equal(cpu->scale, gpu->scale));
  const at::Tensor y = dequantize(*gpu);
  EXPECT_TRUE(y.is_cuda());
  EXPECT_TRUE(test::bytes_equal(dequantize(*cpu), y));
  // Dithered decoding regenerates the same random bits on both.
  cpu->dither = gpu->dither = true;
  EXPECT_TRUE(test::bytes_equal(dequantize(*cpu), dequantize(*gpu)));
}

TEST(Quantize_CUDA, ByteIdenticalToCpuEveryWidthAndDtype) {
  REQUIRE_CUDA();
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    for (int b : {1, 2, 4, 8}) {
      for (int64_t d : {1, 33, 256, 1000}) expect_same_bytes(randn({5, d}, d).to(dtype), {b}, 256);
    }
  }
  expect_same_bytes(randn({6, 700}, 1), {1, 2, 4, 8, 8, 1}, 128);
  // Special groups: constants (signed zeros included), NaN, infinity.
  at::Tensor x = randn({4, 512}, 2);
  x[0].narrow(0, 0, 256).fill_(-0.0f);
  x[1].narrow(0, 0, 256).fill_(0.1f);
  x[2][3] = NAN;
  x[3][300] = INFINITY;
  expect_same_bytes(x, {4}, 256);
}

TEST(Quantize_CUDA, MoreGroupsThanAGridDimensionHolds) {
  REQUIRE_CUDA();
  // 65535 blocks x 8 warps = 524280 groups per pass; use 2.5 passes.
  const int64_t groups = 65535 * 8 * 5 / 2;
  const at::Tensor x = randn({groups, 32}, 3);
  expect_same_bytes(x, {2}, 32);
}

TEST(Bitpack_CUDA, MasksAndIndicesMatchCpu) {
  REQUIRE_CUDA();
  at::Generator gen = at::detail::createCPUGenerator(4);
  const at::Tensor mask = at::rand({100003}, gen) > 0.5;
  const at::Tensor pm = pack_mask(mask.cuda());
  EXPECT_TRUE(test::bytes_equal(pm, pack_mask(mask)));
  EXPECT_TRUE(at::equal(unpack_mask(pm, mask.sizes()).cpu(), mask));
  const at::Tensor idx = at::randint(9, {100003}, gen);
  const at::Tensor pi = pack_index(idx.cuda(), 9);
  EXPECT_TRUE(test::bytes_equal(pi, pack_index(idx, 9)));
  EXPECT_TRUE(at::equal(unpack_index(pi, 9, idx.sizes()).cpu(), idx));
}

// The composite (ATen) pool-index and scale_by_mask paths that CUDA takes
// give what the CPU's one-pass paths give.
TEST(PoolIndex_CUDA, MatchesTheCpuPath) {
  REQUIRE_CUDA();
  const at::Tensor x = randn({2, 3, 17, 19}, 8);
  auto [y, idx] = at::max_pool2d_with_indices(x, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false);
  const at::Tensor cpu = pack_pool_index(idx, x.sizes(), {3, 3}, {2, 2}, {1, 1}, {1, 1});
  const at::Tensor gpu = pack_pool_index(idx.cuda(), x.sizes(), {3, 3}, {2, 2}, {1, 1}, {1, 1});
  EXPECT_TRUE(test::bytes_equal(cpu, gpu));
  const at::Tensor back = unpack_pool_index(gpu, idx.sizes(), x.sizes(), {3, 3}, {2, 2}, {1, 1}, {1, 1});
  EXPECT_TRUE(at::equal(back.cpu(), idx));
}

TEST(ScaleByMask_CUDA, MatchesTheCpuPath) {
  REQUIRE_CUDA();
  const at::Tensor g = randn({1000}, 9);
  const at::Tensor packed = pack_mask(randn({1000}, 10) > 0);
  for (auto [a, b] : {std::pair<double, double>{0, 1}, {1, 0.01}})
    EXPECT_TRUE(at::equal(scale_by_mask(g.cuda(), packed.cuda(), a, b).cpu(), scale_by_mask(g, packed, a, b)));
}

// L4's swap on a GPU: out to pinned host memory and back on the side stream,
// waited for by the compute stream; the value comes back bit for bit.
TEST(Swap_CUDA, PackedValuesComeBackExactly) {
  REQUIRE_CUDA();
  const at::Tensor x = randn({4, 1000}, 11).cuda();
  auto packed = quantize(x, {2}, 256, 3, 0);
  const at::Tensor expected = dequantize(*packed).cpu();
  auto swapped = swapOut(c10::IValue(packed));
  packed.reset();
  EXPECT_TRUE(swapped->on_host);
  swapIn(swapped, {}, -1);
  auto back = swapWait(swapped).toCustomClass<PackedActivation>();
  EXPECT_TRUE(back->codes.is_cuda());
  EXPECT_TRUE(at::equal(dequantize(*back).cpu(), expected));
  const at::Tensor mask = pack_mask(x > 0);
  auto swapped_mask = swapOut(c10::IValue(mask));
  swapIn(swapped_mask, {}, -1);
  EXPECT_TRUE(at::equal(swapWait(swapped_mask).toTensor().cpu(), mask.cpu()));
}

}  // namespace
}  // namespace actnn
