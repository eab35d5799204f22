// actnn::quantize / actnn::dequantize on the CPU: the exact bytes (against the
// scalar reference), round-trip error bounds, special groups, layouts, dtypes
// and bad input.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>

#include "actnn/runtime/ops.h"
#include "reference.h"
#include "test_util.h"

namespace actnn {
namespace {

using test::expect_error;

at::Tensor randn(at::IntArrayRef shape, uint64_t seed, at::ScalarType dtype = at::kFloat) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(dtype);
}

std::vector<uint16_t> u16(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  const auto* p = reinterpret_cast<const uint16_t*>(c.data_ptr());
  return std::vector<uint16_t>(p, p + c.numel());
}

void expect_matches_reference(const at::Tensor& x, std::vector<int64_t> bits, int64_t G,
                              uint64_t seed, uint64_t offset) {
  const auto p = quantize(x, bits, G, int64_t(seed), int64_t(offset));
  const test::Packed ref = test::reference_quantize(x, bits, G, seed, offset);
  ASSERT_EQ(p->codes.numel(), int64_t(ref.codes.size()));
  const uint8_t* codes = p->codes.data_ptr<uint8_t>();
  for (size_t i = 0; i < ref.codes.size(); ++i) {
    ASSERT_EQ(codes[i], ref.codes[i]) << "code byte " << i << " of " << ref.codes.size();
  }
  EXPECT_EQ(u16(p->lo), ref.lo);
  EXPECT_EQ(u16(p->scale), ref.scale);
}

TEST(Quantize, BytesMatchScalarReference) {
  // Sample sizes that are, and are not, multiples of the group size and of the
  // kernel's run of 32 values; every width; a non-zero offset.
  for (int b : {1, 2, 4, 8}) {
    for (int64_t d : {1, 31, 32, 33, 256, 300, 1000}) {
      expect_matches_reference(randn({5, d}, 10 + d), {b}, 256, 42, 7);
      expect_matches_reference(randn({3, d}, 20 + d), {b}, 64, 1ull << 40, 0);
    }
  }
}

TEST(Quantize, HalfAndBFloat16BytesMatchScalarReference) {
  for (auto dtype : {at::kHalf, at::kBFloat16}) {
    for (int b : {1, 2, 4, 8}) expect_matches_reference(randn({4, 700}, 3, dtype), {b}, 128, 9, 1);
  }
}

TEST(Quantize, MixedBitsMatchScalarReference) {
  expect_matches_reference(randn({6, 500}, 4), {1, 2, 4, 8, 2, 1}, 256, 5, 3);
}

TEST(Quantize, SeedAndOffsetSelectTheStream) {
  const at::Tensor x = randn({8, 512}, 5);
  const auto a = quantize(x, {2}, 256, 1, 0);
  const auto b = quantize(x, {2}, 256, 1, 0);
  const auto c = quantize(x, {2}, 256, 2, 0);
  const auto d = quantize(x, {2}, 256, 1, 1);
  EXPECT_TRUE(test::bytes_equal(a->codes, b->codes));  // reproducible
  EXPECT_FALSE(test::bytes_equal(a->codes, c->codes));
  EXPECT_FALSE(test::bytes_equal(a->codes, d->codes));
  EXPECT_TRUE(test::bytes_equal(a->lo, c->lo));  // metadata does not depend on the stream
}

TEST(Quantize, SameBytesForAnyThreadCount) {
  const at::Tensor x = randn({64, 4096}, 6);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = quantize(x, {4}, 256, 3, 0);
  at::set_num_threads(std::max(2, threads));
  const auto many = quantize(x, {4}, 256, 3, 0);
  at::set_num_threads(threads);
  EXPECT_TRUE(test::bytes_equal(one->codes, many->codes));
}

// |x' - x| is below one quantization step 1/scale of x's group.
void expect_within_one_step(const at::Tensor& x, const PackedActivation& p) {
  const at::Tensor y = dequantize(p).to(at::kFloat).reshape({x.size(0), -1});
  const at::Tensor xf = x.to(at::kFloat).reshape({x.size(0), -1});
  const at::Tensor step = p.scale.to(at::kFloat).reciprocal();  // [N, P]
  const auto ya = y.accessor<float, 2>(), xa = xf.accessor<float, 2>();
  const auto sa = step.accessor<float, 2>();
  const int64_t G = p.group_size;
  // Half / bf16 output adds the rounding of the result to its type.
  const float rel = x.scalar_type() == at::kHalf       ? 1e-3f
                    : x.scalar_type() == at::kBFloat16 ? 8e-3f
                                                       : 1e-6f;
  for (int64_t n = 0; n < xf.size(0); ++n) {
    for (int64_t j = 0; j < xf.size(1); ++j) {
      ASSERT_LT(std::fabs(ya[n][j] - xa[n][j]), sa[n][j / G] + rel * std::fabs(ya[n][j]))
          << "sample " << n << " value " << j << " x=" << xa[n][j] << " x'=" << ya[n][j];
    }
  }
}

TEST(Quantize, RoundTripWithinOneStepEveryWidthAndDtype) {
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    for (int b : {1, 2, 4, 8}) {
      const at::Tensor x = randn({3, 600}, 7, dtype) * 3 + 1;
      const auto p = quantize(x, {b}, 256, 11, 0);
      EXPECT_EQ(p->scale.scalar_type(), dtype == at::kHalf ? at::kHalf : at::kBFloat16);
      expect_within_one_step(x, *p);
    }
  }
  const at::Tensor x = randn({4, 1000}, 8);
  expect_within_one_step(x, *quantize(x, {8, 1, 4, 2}, 128, 12, 0));
}

TEST(Quantize, ConstantGroupsAreExact) {
  // Arbitrary fp32 constants (not representable in bf16), signed zeros, and
  // constants in half / bf16 input.
  const float values[] = {0.1f, -3.14159274f, 1e-30f, -0.0f, 0.0f, 123456.789f, 1e38f};
  for (float c : values) {
    const at::Tensor x = at::full({2, 300}, c);
    const at::Tensor y = dequantize(*quantize(x, {2}, 256, 1, 0));
    EXPECT_TRUE(test::bytes_equal(x, y)) << c;
  }
  for (auto dtype : {at::kHalf, at::kBFloat16}) {
    const at::Tensor x = at::full({2, 300}, 0.1f).to(dtype);
    EXPECT_TRUE(test::bytes_equal(x, dequantize(*quantize(x, {1}, 256, 1, 0))));
  }
  // A constant group beside a varying one in the same sample.
  at::Tensor x = randn({1, 512}, 9);
  x.narrow(1, 256, 256).fill_(0.3f);
  const at::Tensor y = dequantize(*quantize(x, {4}, 256, 1, 0));
  EXPECT_TRUE(test::bytes_equal(x.narrow(1, 256, 256), y.narrow(1, 256, 256)));
}

// Dithered decoding (quant_math.h): the kernel's values equal the scalar
// reference's for every width, dtype, mixed widths and partial runs; constant
// groups stay exact.
TEST(Quantize, DitheredDecodeMatchesScalarReference) {
  auto check = [](const at::Tensor& x, std::vector<int64_t> bits, int64_t G, int64_t seed, int64_t offset) {
    auto p = quantize(x, bits, G, seed, offset);
    p->dither = true;
    const at::Tensor got = dequantize(*p);
    const at::Tensor want =
        test::reference_dequantize(p->codes, p->lo, p->scale, bits, x.sizes(), G, x.scalar_type() == at::kHalf,
                                   true, uint64_t(seed), uint64_t(offset))
            .to(x.scalar_type());
    EXPECT_TRUE(test::bytes_equal(got, want)) << x.sizes() << " bits " << bits[0] << " " << x.scalar_type();
    p->dither = false;
    EXPECT_FALSE(at::equal(got, dequantize(*p))) << "dithered and plain decoding agree";
  };
  for (int b : {1, 2, 4, 8}) {
    for (int64_t d : {33, 256, 300, 1000}) check(randn({5, d}, 30 + d), {b}, 256, 42, 7);
    check(randn({3, 500}, 31), {b}, 64, int64_t(1) << 40, 0);
  }
  for (auto dtype : {at::kHalf, at::kBFloat16}) check(randn({4, 700}, 3, dtype), {2}, 128, 9, 1);
  check(randn({6, 500}, 4), {1, 2, 4, 8, 2, 1}, 256, 5, 3);
  at::Tensor x = randn({1, 512}, 9);
  x.narrow(1, 256, 256).fill_(0.3f);
  auto p = quantize(x, {2}, 256, 1, 0);
  p->dither = true;
  EXPECT_TRUE(test::bytes_equal(x.narrow(1, 256, 256), dequantize(*p).narrow(1, 256, 256)));
}

// The dithered noise x' - x is uniform on (-step/2, step/2] whatever x is:
// mean 0 and variance step^2 / 12 for a value on a level (whose plain noise
// is 0) as for one halfway between two (plain: step^2 / 4). 4000 seeds.
TEST(Quantize, DitheredNoiseIsUniformWhateverTheValue) {
  // One group spanning [0, 3]: 2-bit levels 0, 1, 2, 3 (the stored minimum
  // and scale are exact), values on levels and halfway between.
  at::Tensor x = at::zeros({1, 256});
  auto a = x.accessor<float, 2>();
  for (int64_t j = 0; j < 256; ++j) a[0][j] = j < 128 ? float(j % 4) : 0.5f + float(j % 3);
  x[0][0] = 0.0f;
  x[0][1] = 3.0f;
  constexpr int kSeeds = 4000;
  at::Tensor sum_d = at::zeros({256}, at::kDouble), sq_d = at::zeros({256}, at::kDouble);
  at::Tensor sq_plain = at::zeros({256}, at::kDouble);
  double worst = 0;
  for (int64_t s = 0; s < kSeeds; ++s) {
    auto p = quantize(x, {2}, 256, 100 + s, 0);
    ASSERT_EQ(p->scale.to(at::kFloat).item<float>(), 1.0f);
    const at::Tensor plain = (dequantize(*p) - x).to(at::kDouble)[0];
    p->dither = true;
    const at::Tensor e = (dequantize(*p) - x).to(at::kDouble)[0];
    worst = std::max(worst, e.abs().max().item<double>());
    sum_d += e;
    sq_d += e * e;
    sq_plain += plain * plain;
  }
  EXPECT_LE(worst, 0.5);
  const at::Tensor mean = sum_d / kSeeds, var = sq_d / kSeeds - mean * mean;
  // Per value: the mean's standard error is sqrt(1/12 / 4000) = 0.0046.
  EXPECT_LT(mean.abs().max().item<double>(), 5 * 0.0046);
  const double on_level = var.narrow(0, 0, 128).mean().item<double>();
  const double halfway = var.narrow(0, 128, 128).mean().item<double>();
  EXPECT_NEAR(on_level / (1.0 / 12), 1.0, 0.03);
  EXPECT_NEAR(halfway / (1.0 / 12), 1.0, 0.03);
  EXPECT_EQ(sq_plain.narrow(0, 0, 128).max().item<double>(), 0.0);
  EXPECT_NEAR(sq_plain.narrow(0, 128, 128).mean().item<double>() / kSeeds / 0.25, 1.0, 0.03);
}

TEST(Quantize, NonFiniteGroupsDecodeToNaN) {
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    at::Tensor x = randn({2, 512}, 10);
    x[1][300] = bad;  // sample 1, group 1
    const at::Tensor y = dequantize(*quantize(x, {2}, 256, 1, 0));
    EXPECT_TRUE(y[1].narrow(0, 256, 256).isnan().all().item<bool>()) << bad;
    EXPECT_FALSE(y[1].narrow(0, 0, 256).isnan().any().item<bool>()) << bad;
    EXPECT_FALSE(y[0].isnan().any().item<bool>()) << bad;
  }
}

TEST(Quantize, LayoutAndSizes) {
  const at::Tensor x = randn({4, 3, 10, 10}, 11);  // D = 300, P = 2 groups of 256
  const auto p = quantize(x, {2}, 256, 0, 0);
  EXPECT_EQ(p->codes.numel(), 4 * 512 * 2 / 8);
  EXPECT_EQ(p->lo.sizes(), (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(p->nbytes(), 4 * 128 + 2 * 8 * 2);
  EXPECT_EQ(p->original_nbytes(), 4 * 300 * 4);
  EXPECT_EQ(dequantize(*p).sizes(), x.sizes());
  // Per-sample widths: sample n's codes start after all earlier samples'.
  const auto m = quantize(x, {1, 8, 2, 4}, 256, 0, 0);
  EXPECT_EQ(m->codes.numel(), 512 * (1 + 8 + 2 + 4) / 8);
  // Each sample's bytes equal those of a uniform quantization at its width:
  // the random stream index depends only on the value's position.
  int64_t off = 0;
  const int64_t widths[] = {1, 8, 2, 4};
  for (int64_t n = 0; n < 4; ++n) {
    const auto u = quantize(x, {widths[n]}, 256, 0, 0);
    const int64_t bytes = 512 * widths[n] / 8;
    EXPECT_TRUE(test::bytes_equal(m->codes.narrow(0, off, bytes), u->codes.narrow(0, n * bytes, bytes)))
        << "sample " << n;
    off += bytes;
  }
  // One width given per sample, all equal, is the uniform layout.
  EXPECT_TRUE(test::bytes_equal(quantize(x, {2, 2, 2, 2}, 256, 0, 0)->codes, p->codes));
}

TEST(Quantize, EmptyScalarAndNonContiguous) {
  for (auto shape : {std::vector<int64_t>{0, 5}, std::vector<int64_t>{4, 0}, std::vector<int64_t>{0}}) {
    const at::Tensor x = at::empty(shape);
    const auto p = quantize(x, {2}, 256, 0, 0);
    EXPECT_EQ(p->codes.numel(), 0);
    EXPECT_EQ(dequantize(*p).sizes(), x.sizes());
  }
  const at::Tensor s = at::full({}, 2.5f);
  EXPECT_EQ(dequantize(*quantize(s, {4}, 256, 0, 0)).item<float>(), 2.5f);
  const at::Tensor base = randn({40, 30}, 12);
  const at::Tensor t = base.t();  // [30, 40], non-contiguous
  ASSERT_FALSE(t.is_contiguous());
  const auto a = quantize(t, {4}, 64, 5, 0);
  const auto b = quantize(t.contiguous(), {4}, 64, 5, 0);
  EXPECT_TRUE(test::bytes_equal(a->codes, b->codes));
  EXPECT_TRUE(test::bytes_equal(a->lo, b->lo));
}

TEST(Quantize, BadInputNamesTheArgument) {
  const at::Tensor x = randn({2, 64}, 13);
  expect_error([&] { quantize(x.to(at::kInt), {2}); }, "x must be a floating-point tensor");
  expect_error([&] { quantize(x.to(at::kDouble), {2}); }, "got Double");
  expect_error([&] { quantize(x, {3}); }, "bits must be 1, 2, 4 or 8, got 3");
  expect_error([&] { quantize(x, {2, 16}); }, "got 16 for sample 1");
  expect_error([&] { quantize(x, {2, 2, 2}); }, "one per sample (2 samples along dim 0), got 3");
  expect_error([&] { quantize(x, {}); }, "bits must hold one width");
  expect_error([&] { quantize(x, {2}, 48); }, "group_size must be a positive multiple of 32, got 48");
  expect_error([&] { quantize(x, {2}, 0); }, "group_size must be a positive multiple of 32, got 0");
  const auto p = quantize(x, {2});
  expect_error([&] { dequantize(*p, std::vector<int64_t>{2, 32}); },
               "has shape [2, 64] but shape [2, 32] was requested");
  expect_error([&] { dequantize(*p, c10::nullopt, at::kHalf); },
               "has dtype Float but dtype Half was requested");
  expect_error([&] { dequantize(*p, c10::nullopt, at::kLong); }, "but dtype Long was requested");
}

}  // namespace
}  // namespace actnn
