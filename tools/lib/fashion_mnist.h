// Fashion-MNIST from Debian's dataset-fashion-mnist: the gzip-compressed IDX
// files under /usr/share/datasets/fashion-mnist, read by our own loader.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace actnn {
namespace tools {

struct Dataset {
  at::Tensor images;  // [N, 1, 28, 28] float, normalized to mean 0, std 1 (train-set statistics)
  at::Tensor labels;  // [N] int64 in [0, 10)
};

constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// The training (60000) or test (10000) split; `limit` > 0 keeps the first
// `limit` samples. Throws std::runtime_error naming the file for a missing,
// truncated or malformed file.
Dataset loadFashionMnist(bool train, int64_t limit = 0, const std::string& dir = kFashionMnistDir);

// The i-th batch of `batch` samples in the order of `permutation` (int64).
Dataset batchOf(const Dataset& data, const at::Tensor& permutation, int64_t i, int64_t batch);

}  // namespace tools
}  // namespace actnn
