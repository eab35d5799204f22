// actnn-bench accuracy: train the same model from the same initial weights on
// Fashion-MNIST (Debian's dataset-fashion-mnist) once per level — "fp" is
// plain LibTorch autograd on the original module — with the same data order,
// and compare test accuracy per epoch. SGD with momentum 0.9, weight decay
// 5e-4 and a cosine learning-rate schedule. Progress goes to stderr, one JSON
// line per (level, epoch) to stdout, then a table of loss and accuracy.
#include <ATen/Parallel.h>
#include <torch/optim/sgd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "actnn/actnn.h"
#include "actnn/passes/registry.h"
#include "args.h"
#include "bench.h"
#include "bench_models.h"
#include "fashion_mnist.h"
#include "json.h"

namespace actnn {
namespace tools {
namespace {

struct EpochResult {
  double train_loss = 0, test_loss = 0, test_accuracy = 0, seconds = 0;
};

std::pair<double, double> evaluate(torch::jit::Module& model, const Dataset& test) {
  model.eval();
  at::NoGradGuard no_grad;
  double loss = 0, correct = 0;
  const int64_t n = test.images.size(0), batch = 1000;
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t len = std::min(batch, n - start);
    at::Tensor logits = model.forward({test.images.narrow(0, start, len)}).toTensor();
    at::Tensor labels = test.labels.narrow(0, start, len);
    loss += at::cross_entropy_loss(logits, labels).item<double>() * double(len);
    correct += logits.argmax(1).eq(labels).sum().item<double>();
  }
  model.train();
  return {loss / double(n), correct / double(n)};
}

}  // namespace

int bench_accuracy(int argc, char** argv) {
  Args args;
  args.flag("model", "fashion_resnet", "model name or TorchScript archive (.pt), 1x28x28 inputs, 10 classes")
      .flag("levels", "fp,L2,L3", "comma-separated levels to train (fp: LibTorch autograd)")
      .flag("epochs", "3", "passes over the training set")
      .flag("batch", "128", "samples per step")
      .flag("lr", "0.05", "peak learning rate")
      .flag("train-limit", "0", "use only the first N training images (0: all 60000)")
      .flag("test-limit", "0", "use only the first N test images (0: all 10000)")
      .flag("seed", "0", "seed of the data order and of quantization")
      .flag("threads", "0", "CPU threads (0: LibTorch's default)");
  if (!args.parse(argc, argv, 2)) {
    std::cout << "usage: actnn-bench accuracy [flags]\n" << args.help();
    return 0;
  }
  const int64_t epochs = args.integer("epochs"), batch = args.integer("batch"), seed = args.integer("seed");
  const int64_t threads = args.integer("threads");
  if (epochs < 1 || batch < 1) throw UsageError("--epochs and --batch must be positive");
  if (threads > 0) at::set_num_threads(int(threads));
  const double lr = args.number("lr");
  std::vector<std::string> levels;
  {
    std::stringstream list(args.str("levels"));
    for (std::string l; std::getline(list, l, ',');)
      if (!l.empty()) levels.push_back(l);
  }
  if (levels.empty()) throw UsageError("--levels names no level");
  for (const auto& l : levels)
    if (l != "fp") levelPipeline(l);  // an unknown level fails before any training
  const std::string model_name = args.str("model");
  const Dataset train = loadFashionMnist(true, args.integer("train-limit"));
  const Dataset test = loadFashionMnist(false, args.integer("test-limit"));
  const int64_t steps_per_epoch = (train.images.size(0) + batch - 1) / batch;
  const int64_t total_steps = steps_per_epoch * epochs;

  std::vector<std::vector<EpochResult>> results;
  for (const auto& level : levels) {
    torch::jit::Module model = loadModel(model_name);
    if (level != "fp") {
      Options options;
      options.level = level;
      model = compile(model, options);
    }
    std::vector<at::Tensor> params;
    for (const auto& p : model.parameters()) params.push_back(p);
    torch::optim::SGD sgd(params, torch::optim::SGDOptions(lr).momentum(0.9).weight_decay(5e-4));
    at::manual_seed(seed);  // the same data order and quantization seeds for every level
    results.emplace_back();
    int64_t step = 0;
    for (int64_t epoch = 1; epoch <= epochs; ++epoch) {
      const auto start = std::chrono::steady_clock::now();
      const at::Tensor order = at::randperm(train.images.size(0));
      double loss_sum = 0;
      for (int64_t i = 0; i < steps_per_epoch; ++i, ++step) {
        const double rate = 0.5 * lr * (1 + std::cos(M_PI * double(step) / double(total_steps)));
        static_cast<torch::optim::SGDOptions&>(sgd.param_groups()[0].options()).lr(rate);
        const Dataset b = batchOf(train, order, i, batch);
        sgd.zero_grad();
        at::Tensor loss = at::cross_entropy_loss(model.forward({b.images}).toTensor(), b.labels);
        loss.backward();
        sgd.step();
        loss_sum += loss.item<double>();
        if (i % 10 == 0 || i + 1 == steps_per_epoch)
          std::fprintf(stderr, "\r[%s] epoch %lld/%lld  step %lld/%lld  loss %.4f   ", level.c_str(),
                       (long long)epoch, (long long)epochs, (long long)(i + 1), (long long)steps_per_epoch,
                       loss_sum / double(i + 1));
      }
      EpochResult r;
      r.train_loss = loss_sum / double(steps_per_epoch);
      std::tie(r.test_loss, r.test_accuracy) = evaluate(model, test);
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::fprintf(stderr, "\n");
      std::cout << JsonLine()
                       .add("model", model_name)
                       .add("level", level)
                       .add("epoch", epoch)
                       .add("train_loss", r.train_loss)
                       .add("test_loss", r.test_loss)
                       .add("test_accuracy", r.test_accuracy)
                       .add("seconds", r.seconds)
                       .add("threads", int64_t(at::get_num_threads()));
      results.back().push_back(r);
    }
  }

  // The table: one row per epoch, train loss / test accuracy per level.
  std::fprintf(stderr, "\n%-6s", "epoch");
  for (const auto& l : levels) std::fprintf(stderr, "  %-22s", (l + " loss / acc").c_str());
  std::fprintf(stderr, "\n");
  for (int64_t e = 0; e < epochs; ++e) {
    std::fprintf(stderr, "%-6lld", (long long)(e + 1));
    for (const auto& r : results) std::fprintf(stderr, "  %8.4f / %6.2f%%      ", r[e].train_loss, 100 * r[e].test_accuracy);
    std::fprintf(stderr, "\n");
  }
  return 0;
}

}  // namespace tools
}  // namespace actnn
