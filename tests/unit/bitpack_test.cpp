// 1-bit masks and narrow indices: exact round trips, sizes and bad input.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "actnn/runtime/ops.h"
#include "test_util.h"

namespace actnn {
namespace {

using test::expect_error;

TEST(Mask, RoundTripIsExact) {
  at::Generator gen = at::detail::createCPUGenerator(1);
  for (int64_t n : {0, 1, 7, 8, 9, 1000, 4097}) {
    const at::Tensor mask = at::rand({n}, gen) > 0.5;
    const at::Tensor packed = pack_mask(mask);
    EXPECT_EQ(packed.numel(), (n + 7) / 8);
    EXPECT_TRUE(at::equal(unpack_mask(packed, {n}), mask)) << n;
  }
}

TEST(Mask, AnyNonZeroIsSetAndShapesAreKept) {
  at::Generator gen = at::detail::createCPUGenerator(2);
  const at::Tensor x = at::randn({4, 3, 5, 5}, gen);
  const at::Tensor relu_mask = x > 0;
  EXPECT_TRUE(at::equal(unpack_mask(pack_mask(relu_mask), x.sizes()), relu_mask));
  // A float mask (as a dropout mask is) packs its non-zeros; a transposed one works.
  const at::Tensor f = (x > 0).to(at::kFloat) * 2;
  EXPECT_TRUE(at::equal(unpack_mask(pack_mask(f.transpose(0, 3)), {5, 3, 5, 4}),
                        (f.transpose(0, 3) != 0)));
}

// A float tensor packs "!= 0" straight from its values (the relu-output
// masks of insert-compression): NaN is set, -0 and +0 are not, at every
// length around the 8-value runs.
TEST(Mask, FloatValuesPackTheirNonZeros) {
  at::Generator gen = at::detail::createCPUGenerator(4);
  for (int64_t n : {0, 1, 7, 8, 9, 63, 1000, 4097, 70001}) {
    at::Tensor x = at::relu(at::randn({n}, gen));
    if (n > 8) {
      x[1] = -0.0;
      x[2] = std::nanf("");
      x[3] = std::numeric_limits<float>::denorm_min();
      x[n - 1] = std::numeric_limits<float>::infinity();
    }
    EXPECT_TRUE(at::equal(pack_mask(x), pack_mask(x != 0))) << n;
    EXPECT_TRUE(at::equal(unpack_mask(pack_mask(x), {n}), x != 0)) << n;
  }
}

TEST(Mask, BadPackedSizeIsReported) {
  const at::Tensor packed = pack_mask(at::ones({16}, at::kBool));
  expect_error([&] { unpack_mask(packed, {17}); }, "packed must be a 1-d uint8 tensor of 3 bytes");
  expect_error([&] { unpack_mask(packed.to(at::kInt), {16}); }, "got Int");
}

// scale_by_mask: the gradient times (bit ? if_set : if_clear), straight from
// the packed bits (float on the CPU) or through the unpacked mask (other
// dtypes), equal to the ATen expression it replaces in backward graphs.
TEST(Mask, ScaleByMaskEqualsWhereOnTheUnpackedMask) {
  at::Generator gen = at::detail::createCPUGenerator(3);
  for (int64_t n : {0, 1, 7, 8, 9, 1000, 4097}) {
    for (auto dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
      const at::Tensor g = at::randn({n}, gen).to(dtype);
      const at::Tensor mask = at::rand({n}, gen) > 0.5;
      const at::Tensor packed = pack_mask(mask);
      for (auto [a, b] : {std::pair<double, double>{0, 1}, {1, 0.01}}) {
        const at::Tensor expected = at::where(mask, g * a, g * b);
        const at::Tensor got = scale_by_mask(g, packed, a, b);
        EXPECT_TRUE(at::equal(got, expected)) << n << " " << dtype << " " << a << "/" << b;
      }
    }
  }
  // A factor of 0 gives 0 for Inf and NaN gradients too, as masked_fill does.
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const at::Tensor g = at::tensor({INFINITY, NAN, 1.0f, -INFINITY}).to(dtype);
    const at::Tensor m = pack_mask(at::tensor({1, 1, 0, 0}));
    const at::Tensor out = scale_by_mask(g, m, 0, 1);
    EXPECT_TRUE(at::equal(out.narrow(0, 0, 2), at::zeros({2}, dtype))) << dtype;
    EXPECT_EQ(out[2].item<double>(), 1.0);
    EXPECT_TRUE(std::isinf(out[3].item<double>()));
  }
  expect_error([&] { scale_by_mask(at::zeros({9}), pack_mask(at::ones({8}, at::kBool)), 0, 1); },
               "packed must be a 1-d uint8 tensor of 2 bytes");
}

// donate=true lets the result take the gradient's buffer, but only when
// nothing else holds it: a second reference or a view keeps it intact.
TEST(Mask, ScaleByMaskReusesOnlyAnUnsharedDonatedGradient) {
  at::Generator gen = at::detail::createCPUGenerator(4);
  const at::Tensor mask = at::rand({64}, gen) > 0.5;
  const at::Tensor packed = pack_mask(mask);
  at::Tensor g = at::randn({64}, gen);
  const at::Tensor expected = at::where(mask, at::zeros_like(g), g);
  void* buffer = g.data_ptr();
  at::Tensor out = scale_by_mask(g, packed, 0, 1, /*donate=*/true);
  EXPECT_EQ(out.data_ptr(), buffer);
  EXPECT_TRUE(at::equal(out, expected));

  at::Tensor shared = at::randn({64}, gen);
  const at::Tensor other = shared;  // a second holder
  const at::Tensor before = shared.clone();
  out = scale_by_mask(shared, packed, 0, 1, /*donate=*/true);
  EXPECT_NE(out.data_ptr(), shared.data_ptr());
  EXPECT_TRUE(at::equal(other, before));

  at::Tensor base = at::randn({2, 64}, gen);
  const at::Tensor row = base[0];  // a view: the storage has two holders
  const at::Tensor base_before = base.clone();
  out = scale_by_mask(row, packed, 0, 1, /*donate=*/true);
  EXPECT_TRUE(at::equal(base, base_before));
  EXPECT_FALSE(scale_by_mask(expected, packed, 0, 1).is_same(expected));  // not donated
}

TEST(Index, RoundTripEveryWidth) {
  at::Generator gen = at::detail::createCPUGenerator(3);
  for (int64_t k : {1, 2, 3, 4, 9, 16, 27, 255, 256, 1000, 65536}) {
    for (int64_t n : {1, 5, 8, 1001}) {
      const at::Tensor idx = at::randint(k, {n}, gen);
      const at::Tensor packed = pack_index(idx, k);
      int w = 1;
      while ((int64_t(1) << w) < k) ++w;
      EXPECT_EQ(packed.numel(), (n * w + 7) / 8) << "k=" << k;
      EXPECT_TRUE(at::equal(unpack_index(packed, k, {n}), idx)) << "k=" << k << " n=" << n;
    }
  }
}

TEST(Index, MaxPoolArgmaxInsideItsWindow) {
  // A 3x3 window holds 9 positions: 4 bits per saved argmax instead of 64.
  at::Generator gen = at::detail::createCPUGenerator(4);
  const at::Tensor idx = at::randint(9, {8, 16, 14, 14}, gen).to(at::kInt);
  const at::Tensor packed = pack_index(idx, 9);
  EXPECT_EQ(packed.numel(), idx.numel() / 2);
  const at::Tensor back = unpack_index(packed, 9, idx.sizes());
  EXPECT_EQ(back.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(back, idx.to(at::kLong)));
}

TEST(Index, BadInputIsReported) {
  expect_error([&] { pack_index(at::tensor({0, 3, 9, 1}), 9); },
               "index (flattened) [2] = 9 is outside [0, 9)");
  expect_error([&] { pack_index(at::tensor({0, -1}), 9); }, "[1] = -1 is outside [0, 9)");
  expect_error([&] { pack_index(at::tensor({0.5f}), 9); }, "index must be an integer tensor, got Float");
  expect_error([&] { pack_index(at::tensor({0}), 0); }, "num_values must be in [1, 65536], got 0");
  expect_error([&] { pack_index(at::tensor({0}), 70000); }, "got 70000");
  const at::Tensor packed = pack_index(at::tensor({1, 2, 3}), 4);
  expect_error([&] { unpack_index(packed, 4, {5}); }, "(5 values of 2 bits)");
}

TEST(Index, EmptyTensors) {
  const at::Tensor packed = pack_index(at::empty({0}, at::kLong), 9);
  EXPECT_EQ(packed.numel(), 0);
  EXPECT_EQ(unpack_index(packed, 9, {0, 3}).sizes(), (std::vector<int64_t>{0, 3}));
}

}  // namespace
}  // namespace actnn
