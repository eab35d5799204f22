// actnn-bench accuracy: train the same model from the same initial weights on
// Fashion-MNIST (Debian's dataset-fashion-mnist) once per level and seed —
// "fp" is plain LibTorch autograd on the original module — and compare test
// accuracy as a distribution over seeds. A seed sets the data order and the
// quantization seeds; every level sees the same ones. SGD with momentum 0.9,
// weight decay 5e-4 and a cosine learning-rate schedule. Progress goes to
// stderr; stdout gets JSON lines: one per (level, seed, epoch), the training
// loss every --curve-every steps ("curve": true; scripts/plot_accuracy.sh
// draws them), and per (level, epoch) the mean and standard deviation over
// seeds ("summary": true); then a table on stderr.
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

struct TrainingSetup {
  const std::string& model_name;
  const Dataset& train;
  const Dataset& test;
  int64_t epochs, batch;
  double lr;
  int64_t curve_every;
};

// One training run of `level` from the model's initial weights, with data
// order and quantization from at::manual_seed(seed); prints its JSON lines.
std::vector<EpochResult> trainRun(const TrainingSetup& s, const std::string& level, int64_t seed) {
  torch::jit::Module model = loadModel(s.model_name);
  if (level != "fp") model = compile(model, levelVariant(level));
  std::vector<at::Tensor> params;
  for (const auto& p : model.parameters()) params.push_back(p);
  torch::optim::SGD sgd(params, torch::optim::SGDOptions(s.lr).momentum(0.9).weight_decay(5e-4));
  at::manual_seed(seed);  // the same data order and quantization seeds for every level
  const int64_t steps_per_epoch = (s.train.images.size(0) + s.batch - 1) / s.batch;
  const int64_t total_steps = steps_per_epoch * s.epochs;
  std::vector<EpochResult> results;
  int64_t step = 0;
  double curve_sum = 0;
  for (int64_t epoch = 1; epoch <= s.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    const at::Tensor order = at::randperm(s.train.images.size(0));
    double loss_sum = 0;
    for (int64_t i = 0; i < steps_per_epoch; ++i, ++step) {
      const double rate = 0.5 * s.lr * (1 + std::cos(M_PI * double(step) / double(total_steps)));
      static_cast<torch::optim::SGDOptions&>(sgd.param_groups()[0].options()).lr(rate);
      const Dataset b = batchOf(s.train, order, i, s.batch);
      sgd.zero_grad();
      at::Tensor loss = at::cross_entropy_loss(model.forward({b.images}).toTensor(), b.labels);
      loss.backward();
      sgd.step();
      const double step_loss = loss.item<double>();
      loss_sum += step_loss;
      curve_sum += step_loss;
      if (s.curve_every > 0 && (step + 1) % s.curve_every == 0) {
        std::cout << JsonLine()
                         .add("curve", true)
                         .add("level", level)
                         .add("seed", seed)
                         .add("step", step + 1)
                         .add("train_loss", curve_sum / double(s.curve_every));
        curve_sum = 0;
      }
      if (i % 10 == 0 || i + 1 == steps_per_epoch)
        std::fprintf(stderr, "\r[%s seed %lld] epoch %lld/%lld  step %lld/%lld  loss %.4f   ", level.c_str(),
                     (long long)seed, (long long)epoch, (long long)s.epochs, (long long)(i + 1),
                     (long long)steps_per_epoch, loss_sum / double(i + 1));
    }
    EpochResult r;
    r.train_loss = loss_sum / double(steps_per_epoch);
    std::tie(r.test_loss, r.test_accuracy) = evaluate(model, s.test);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "\n");
    std::cout << JsonLine()
                     .add("model", s.model_name)
                     .add("level", level)
                     .add("seed", seed)
                     .add("epoch", epoch)
                     .add("train_loss", r.train_loss)
                     .add("test_loss", r.test_loss)
                     .add("test_accuracy", r.test_accuracy)
                     .add("seconds", r.seconds)
                     .add("threads", int64_t(at::get_num_threads()));
    results.push_back(r);
  }
  return results;
}

}  // namespace

int bench_accuracy(int argc, char** argv) {
  Args args;
  args.flag("model", "fashion_resnet", "model name or TorchScript archive (.pt), 1x28x28 inputs, 10 classes")
      .flag("levels", "fp,L2,L3",
            "comma-separated levels to train (fp: LibTorch autograd; L3-biased etc.: without debias-backward)")
      .flag("epochs", "3", "passes over the training set")
      .flag("batch", "128", "samples per step")
      .flag("lr", "0.05", "peak learning rate")
      .flag("train-limit", "0", "use only the first N training images (0: all 60000)")
      .flag("test-limit", "0", "use only the first N test images (0: all 10000)")
      .flag("seed", "0", "first seed of the data order and of quantization")
      .flag("seeds", "1", "runs per level, with seeds seed, seed + 1, ...")
      .flag("curve-every", "20", "steps per point of the training-loss curve (0: no curve)")
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
    if (l != "fp") levelVariant(l);  // an unknown level fails before any training
  const int64_t seeds = args.integer("seeds"), curve_every = args.integer("curve-every");
  if (seeds < 1 || curve_every < 0) throw UsageError("--seeds must be positive and --curve-every not negative");
  const std::string model_name = args.str("model");
  const Dataset train = loadFashionMnist(true, args.integer("train-limit"));
  const Dataset test = loadFashionMnist(false, args.integer("test-limit"));

  const TrainingSetup setup{model_name, train, test, epochs, batch, lr, curve_every};
  // results[level][seed][epoch]
  std::vector<std::vector<std::vector<EpochResult>>> results(levels.size());
  for (size_t li = 0; li < levels.size(); ++li)
    for (int64_t run = 0; run < seeds; ++run) results[li].push_back(trainRun(setup, levels[li], seed + run));

  // Per (level, epoch): mean and sample standard deviation over the seeds.
  auto meanStd = [](const std::vector<double>& v) {
    double m = 0, ss = 0;
    for (double x : v) m += x / double(v.size());
    for (double x : v) ss += (x - m) * (x - m);
    return std::make_pair(m, v.size() > 1 ? std::sqrt(ss / double(v.size() - 1)) : 0.0);
  };
  std::fprintf(stderr, "\n%-6s", "epoch");
  for (const auto& l : levels) std::fprintf(stderr, "  %-34s", (l + " loss / accuracy (mean +- std)").c_str());
  std::fprintf(stderr, "\n");
  for (int64_t e = 0; e < epochs; ++e) {
    std::fprintf(stderr, "%-6lld", (long long)(e + 1));
    for (size_t li = 0; li < levels.size(); ++li) {
      std::vector<double> loss, accuracy;
      for (const auto& run : results[li]) {
        loss.push_back(run[size_t(e)].train_loss);
        accuracy.push_back(100 * run[size_t(e)].test_accuracy);
      }
      const auto [lm, ls] = meanStd(loss);
      const auto [am, as] = meanStd(accuracy);
      std::cout << JsonLine()
                       .add("summary", true)
                       .add("model", model_name)
                       .add("level", levels[li])
                       .add("epoch", e + 1)
                       .add("seeds", seeds)
                       .add("train_loss_mean", lm)
                       .add("train_loss_std", ls)
                       .add("test_accuracy_mean", am)
                       .add("test_accuracy_std", as);
      std::fprintf(stderr, "  %.4f +- %.4f / %6.2f +- %.2f%%    ", lm, ls, am, as);
    }
    std::fprintf(stderr, "\n");
  }
  return 0;
}

}  // namespace tools
}  // namespace actnn
