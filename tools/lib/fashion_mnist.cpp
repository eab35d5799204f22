#include "fashion_mnist.h"

#include <zlib.h>

#include <stdexcept>
#include <vector>

namespace actnn {
namespace tools {
namespace {

std::vector<uint8_t> gunzip(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) throw std::runtime_error("cannot open '" + path + "' (install dataset-fashion-mnist)");
  std::vector<uint8_t> out;
  std::vector<uint8_t> chunk(1 << 20);
  int n;
  while ((n = gzread(file, chunk.data(), unsigned(chunk.size()))) > 0) out.insert(out.end(), chunk.begin(), chunk.begin() + n);
  int err = 0;
  const char* msg = gzerror(file, &err);
  const std::string error = n < 0 || err < 0 ? msg : "";
  gzclose(file);
  if (!error.empty()) throw std::runtime_error("'" + path + "': gzip error: " + error);
  return out;
}

uint32_t bigEndian(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t(b[at]) << 24 | uint32_t(b[at + 1]) << 16 | uint32_t(b[at + 2]) << 8 | uint32_t(b[at + 3]);
}

// An IDX file of unsigned bytes: magic 0x0000 08 <rank>, then rank sizes.
at::Tensor readIdx(const std::string& path, size_t rank) {
  const auto bytes = gunzip(path);
  auto bad = [&](const std::string& what) { return std::runtime_error("'" + path + "': " + what); };
  if (bytes.size() < 4 + 4 * rank) throw bad("truncated header");
  const uint32_t magic = bigEndian(bytes, 0);
  if (magic != (0x0800u | uint32_t(rank)))
    throw bad("not an IDX file of " + std::to_string(rank) + "-d unsigned bytes (magic " + std::to_string(magic) + ")");
  std::vector<int64_t> shape;
  size_t numel = 1;
  for (size_t i = 0; i < rank; ++i) {
    shape.push_back(bigEndian(bytes, 4 + 4 * i));
    numel *= size_t(shape.back());
  }
  const size_t header = 4 + 4 * rank;
  if (bytes.size() != header + numel)
    throw bad("holds " + std::to_string(bytes.size() - header) + " data bytes, its header says " + std::to_string(numel));
  at::Tensor t = at::empty(shape, at::kByte);
  std::copy(bytes.begin() + header, bytes.end(), t.data_ptr<uint8_t>());
  return t;
}

}  // namespace

Dataset loadFashionMnist(bool train, int64_t limit, const std::string& dir) {
  const std::string prefix = dir + "/" + (train ? "train" : "t10k");
  at::Tensor images = readIdx(prefix + "-images-idx3-ubyte.gz", 3);
  at::Tensor labels = readIdx(prefix + "-labels-idx1-ubyte.gz", 1);
  if (images.size(0) != labels.size(0))
    throw std::runtime_error(prefix + ": " + std::to_string(images.size(0)) + " images but " +
                             std::to_string(labels.size(0)) + " labels");
  if (limit > 0 && limit < images.size(0)) {
    images = images.narrow(0, 0, limit);
    labels = labels.narrow(0, 0, limit);
  }
  // Fashion-MNIST training-set pixel mean and standard deviation (of /255).
  const double mean = 0.2860, std = 0.3530;
  Dataset d;
  d.images = ((images.to(at::kFloat) / 255.0 - mean) / std).unsqueeze(1).contiguous();
  d.labels = labels.to(at::kLong);
  return d;
}

Dataset batchOf(const Dataset& data, const at::Tensor& permutation, int64_t i, int64_t batch) {
  const int64_t start = i * batch, n = std::min(batch, data.images.size(0) - start);
  at::Tensor idx = permutation.narrow(0, start, n);
  return {data.images.index_select(0, idx), data.labels.index_select(0, idx)};
}

}  // namespace tools
}  // namespace actnn
