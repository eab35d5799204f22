// The buffer-reuse ops B calls after reuse-buffers: batch-norm backward
// against ATen's (in place and not), sums into donated gradients, and
// placeholders. A donated tensor is overwritten only when nothing else
// holds it.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "actnn/runtime/ops.h"

namespace actnn {
namespace {

double relErr(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-30, b.abs().max().item<double>());
}

struct BatchNormCase {
  std::vector<int64_t> shape;
  bool weight;
};

TEST(BufferReuse, BatchNormBackwardMatchesATen) {
  at::Generator gen = at::detail::createCPUGenerator(11);
  for (const auto& c : std::vector<BatchNormCase>{{{8, 3, 5, 5}, true},
                                                  {{16, 6}, true},
                                                  {{2, 4, 3, 2, 5}, false},
                                                  {{3, 2, 7}, true},
                                                  {{1, 5, 1, 1}, true}}) {
    const at::Tensor x = at::randn(c.shape, gen) * 3 + 1;
    const at::Tensor dy = at::randn(c.shape, gen);
    const int64_t ch = c.shape[1];
    const at::Tensor w = c.weight ? at::randn({ch}, gen) : at::Tensor();
    std::vector<int64_t> dims{0};
    for (int64_t d = 2; d < int64_t(c.shape.size()); ++d) dims.push_back(d);
    const at::Tensor mean = x.mean(dims);
    const at::Tensor invstd = 1 / (x.var(dims, /*unbiased=*/false) + 1e-5).sqrt();
    for (const std::array<bool, 3> mask : {std::array<bool, 3>{true, true, true}, std::array<bool, 3>{true, false, false},
                                           std::array<bool, 3>{false, true, true}}) {
      auto ref = at::native_batch_norm_backward(dy, x, w, {}, {}, mean, invstd, true, 1e-5, mask);
      at::Tensor donated = x.clone();
      void* buffer = donated.data_ptr();
      auto got = batch_norm_backward(dy, donated, w, {}, {}, mean, invstd, true, 1e-5, mask, /*donate_input=*/true);
      const std::string what = "shape " + c10::str(c10::IntArrayRef(c.shape)) + " mask " +
                               std::to_string(mask[0]) + std::to_string(mask[1]) + std::to_string(mask[2]);
      ASSERT_EQ(std::get<0>(ref).defined(), mask[0]) << what;
      if (mask[0]) {
        EXPECT_LT(relErr(std::get<0>(got), std::get<0>(ref)), 1e-5) << what;
        EXPECT_EQ(std::get<0>(got).data_ptr(), buffer) << what << ": the input gradient took the donated input";
      } else {
        EXPECT_FALSE(std::get<0>(got).defined()) << what;
      }
      if (mask[1]) EXPECT_LT(relErr(std::get<1>(got), std::get<1>(ref)), 1e-5) << what;
      if (mask[2]) EXPECT_LT(relErr(std::get<2>(got), std::get<2>(ref)), 1e-5) << what;

      // Held elsewhere, or not donated: the input is left alone.
      const at::Tensor held = x.clone(), copy = held;
      got = batch_norm_backward(dy, held, w, {}, {}, mean, invstd, true, 1e-5, mask, /*donate_input=*/true);
      EXPECT_TRUE(at::equal(copy, x)) << what;
      got = batch_norm_backward(dy, x, w, {}, {}, mean, invstd, true, 1e-5, mask, /*donate_input=*/false);
      if (mask[0]) EXPECT_LT(relErr(std::get<0>(got), std::get<0>(ref)), 1e-5) << what;
    }
  }
}

TEST(BufferReuse, BatchNormBackwardFallsBackToATen) {
  // Evaluation mode and double are ATen's: same results, bit for bit.
  at::Generator gen = at::detail::createCPUGenerator(12);
  const at::Tensor x = at::randn({4, 3, 2, 2}, gen).to(at::kDouble), dy = at::randn({4, 3, 2, 2}, gen).to(at::kDouble);
  const at::Tensor w = at::rand({3}, gen).to(at::kDouble), rm = at::zeros({3}, at::kDouble), rv = at::ones({3}, at::kDouble);
  const at::Tensor sm = x.mean({0, 2, 3}), si = 1 / (x.var({0, 2, 3}, false) + 1e-5).sqrt();
  for (bool train : {true, false}) {
    auto ref = at::native_batch_norm_backward(dy, x, w, rm, rv, sm, si, train, 1e-5, {true, true, true});
    auto got = batch_norm_backward(dy, x.clone(), w, rm, rv, sm, si, train, 1e-5, {true, true, true}, true);
    EXPECT_TRUE(at::equal(std::get<0>(got), std::get<0>(ref)));
    EXPECT_TRUE(at::equal(std::get<1>(got), std::get<1>(ref)));
  }
}

TEST(BufferReuse, AddGradsWritesIntoAnUnsharedDonatedOperand) {
  at::Generator gen = at::detail::createCPUGenerator(13);
  const at::Tensor a0 = at::randn({4, 8}, gen), b0 = at::randn({4, 8}, gen);
  const at::Tensor sum = a0 + b0;

  at::Tensor a = a0.clone();
  void* buffer = a.data_ptr();
  at::Tensor out = add_grads(a, b0, /*donate_a=*/true, /*donate_b=*/false);
  EXPECT_EQ(out.data_ptr(), buffer);
  EXPECT_TRUE(at::equal(out, sum));

  at::Tensor b = b0.clone();
  buffer = b.data_ptr();
  out = add_grads(a0, b, /*donate_a=*/false, /*donate_b=*/true);
  EXPECT_EQ(out.data_ptr(), buffer);
  EXPECT_TRUE(at::equal(out, sum));  // a + b and b + a are the same floats

  const at::Tensor held = a0.clone(), other = held;
  out = add_grads(held, b0, true, false);
  EXPECT_NE(out.data_ptr(), held.data_ptr());
  EXPECT_TRUE(at::equal(other, a0));

  // Broadcasting, or a view: a new tensor.
  const at::Tensor row = at::randn({8}, gen);
  EXPECT_TRUE(at::equal(add_grads(row.clone(), b0, true, false), row + b0));
  at::Tensor base = a0.clone();
  const at::Tensor view = base.view({8, 4});
  out = add_grads(view, b0.view({8, 4}), true, false);
  EXPECT_TRUE(at::equal(base, a0));
  EXPECT_TRUE(at::equal(out, sum.view({8, 4})));
}

TEST(BufferReuse, PlaceholderIsTheDonorWhenItFitsAndTakesNoAllocatorMemoryOtherwise) {
  const at::Tensor donor = at::zeros({2, 3, 4});
  EXPECT_TRUE(placeholder(donor, {2, 3, 4}, at::kFloat, at::kCPU).is_same(donor));
  EXPECT_FALSE(placeholder(donor, {2, 3, 4}, at::kDouble, at::kCPU).is_same(donor));
  const at::Tensor transposed = donor.transpose(0, 2);
  EXPECT_FALSE(placeholder(transposed, transposed.sizes(), at::kFloat, at::kCPU).is_same(transposed));
  // No donor: a contiguous tensor of the shape, behind no allocation (its
  // pages read as zeros and are writable).
  at::Tensor big = placeholder(c10::nullopt, {64, 256, 64, 64}, at::kFloat, at::kCPU);
  EXPECT_EQ(big.sizes(), (std::vector<int64_t>{64, 256, 64, 64}));
  EXPECT_TRUE(big.is_contiguous());
  EXPECT_EQ(big.scalar_type(), at::kFloat);
  EXPECT_EQ(big.storage().data_ptr().get_deleter(), big.storage().data_ptr().get_deleter());
  EXPECT_NE(big.storage().data_ptr().get_deleter(), at::empty({1}).storage().data_ptr().get_deleter());
  EXPECT_EQ(big[63][255][63][63].item<float>(), 0.0f);
  big[1][2][3][4] = 5.0f;
  EXPECT_EQ(big[1][2][3][4].item<float>(), 5.0f);
}

// Chunked over the batch, convolution backward gives ATen's gradients to
// float rounding (oneDNN's kernels depend on the batch size; weight and bias
// gradients are summed per slice).
TEST(BufferReuse, ChunkedConvolutionBackwardMatchesATen) {
  at::Generator gen = at::detail::createCPUGenerator(15);
  const at::Tensor x = at::randn({10, 6, 9, 9}, gen), w = at::randn({8, 6, 3, 3}, gen);
  const std::vector<int64_t> stride{2, 2}, padding{1, 1}, dilation{1, 1}, zeros{0, 0}, bias{8};
  const at::Tensor gy = at::randn(at::convolution(x, w, {}, stride, padding, dilation, false, zeros, 1).sizes(), gen);
  for (const std::array<bool, 3> mask : {std::array<bool, 3>{true, true, true}, std::array<bool, 3>{true, false, false},
                                         std::array<bool, 3>{false, true, true}}) {
    auto ref = at::convolution_backward(gy, x, w, bias, stride, padding, dilation, false, zeros, 1, mask);
    const int64_t sample = 6 * 9 * 9 * 4;
    for (int64_t chunk_bytes : {int64_t(0), sample, 3 * sample, 100 * sample}) {
      auto got = convolution_backward(gy, x, w, bias, stride, padding, dilation, false, zeros, 1, mask, chunk_bytes);
      const std::string what = "chunk " + std::to_string(chunk_bytes / sample) + " samples";
      if (mask[0]) EXPECT_LT(relErr(std::get<0>(got), std::get<0>(ref)), 1e-5) << what;
      else EXPECT_FALSE(std::get<0>(got).defined()) << what;
      if (mask[1]) EXPECT_LT(relErr(std::get<1>(got), std::get<1>(ref)), 1e-5) << what;
      if (mask[2]) EXPECT_LT(relErr(std::get<2>(got), std::get<2>(ref)), 1e-5) << what;
    }
  }
}

// What actnn::placeholder relies on: ATen's convolution_backward computes the
// input gradient alone from the input's shape, never its values. Checked on
// every CPU backend the shapes below reach (oneDNN, the slow 2-d/3-d paths,
// depthwise, 1-d, transposed): a NaN input gives the same bits.
TEST(BufferReuse, ConvolutionInputGradientDoesNotReadTheInput) {
  struct Conv {
    std::vector<int64_t> x, w;
    int64_t stride, padding, dilation, groups;
    bool transposed;
  };
  at::Generator gen = at::detail::createCPUGenerator(14);
  for (const Conv& c : std::vector<Conv>{{{4, 8, 10, 10}, {4, 8, 1, 1}, 1, 0, 1, 1, false},
                                         {{1, 8, 5, 5}, {4, 8, 1, 1}, 1, 0, 1, 1, false},
                                         {{2, 8, 9, 9}, {8, 1, 3, 3}, 2, 1, 1, 8, false},
                                         {{2, 4, 5, 6, 6}, {6, 4, 3, 3, 3}, 1, 1, 1, 1, false},
                                         {{2, 4, 12}, {6, 4, 3}, 2, 1, 2, 1, false},
                                         {{2, 4, 5, 5}, {4, 6, 3, 3}, 2, 1, 1, 1, true},
                                         {{16, 32, 8, 8}, {16, 32, 1, 1}, 2, 0, 1, 1, false}}) {
    const size_t nd = c.x.size() - 2;
    const at::Tensor x = at::randn(c.x, gen), w = at::randn(c.w, gen);
    const std::vector<int64_t> stride(nd, c.stride), padding(nd, c.padding), dilation(nd, c.dilation),
        zeros(nd, 0);
    const at::Tensor y = at::convolution(x, w, {}, stride, padding, dilation, c.transposed, zeros, c.groups);
    const at::Tensor gy = at::randn(y.sizes(), gen);
    auto grad = [&](const at::Tensor& input, std::array<bool, 3> mask) {
      return std::get<0>(at::convolution_backward(gy, input, w, c10::nullopt, stride, padding, dilation, c.transposed,
                                                  zeros, c.groups, mask));
    };
    const at::Tensor expected = grad(x, {true, true, false});
    EXPECT_TRUE(at::equal(grad(at::full_like(x, NAN), {true, false, false}), expected))
        << "x " << c10::IntArrayRef(c.x) << " w " << c10::IntArrayRef(c.w);
  }
}

}  // namespace
}  // namespace actnn
