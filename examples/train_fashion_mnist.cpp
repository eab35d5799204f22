// actnn's main job, end to end: compile a scripted model so that its saved
// activations are stored compressed, measure the memory that saves, and train
// it on Fashion-MNIST with an ordinary LibTorch training loop, side by side
// with the same model under plain LibTorch autograd (the same initial
// weights, the same batches in the same order), so both losses and both test
// accuracies can be compared.
//
//   train_fashion_mnist MODEL.pt [--level=L3] [--steps=300] [--batch=128] [--lr=0.05]
//
// MODEL.pt is a TorchScript archive in train mode (examples/fashion_mnist_model.py
// writes the bundled one). Exits 1 when actnn's loss does not go down.
#include <torch/optim/sgd.h>
#include <torch/csrc/jit/serialization/import.h>

#include <cstdio>
#include <iostream>

#include "actnn/actnn.h"
#include "actnn/runtime/swap.h"
#include "args.h"
#include "bench_models.h"
#include "fashion_mnist.h"
#include "memory_tracker.h"

using actnn::tools::Args;

int main(int argc, char** argv) {
  Args args;
  args.positional("MODEL", "TorchScript archive of the model, in train mode")
      .flag("level", "L3", "compression level (L0..L5)")
      .flag("steps", "300", "training steps (each model)")
      .flag("batch", "128", "samples per step")
      .flag("lr", "0.05", "SGD learning rate (momentum 0.9)");
  // Every allocation of the run is tracked from here on, so a tensor made
  // before a measurement and freed during it is known to the CPU allocator's
  // reporter (which otherwise logs "Memory block of unknown size was
  // allocated before the profiling started").
  actnn::tools::MemoryTracker whole_run;
  try {
    if (!args.parse(argc, argv, 1)) {
      std::cout << "usage: train_fashion_mnist MODEL.pt [flags]\n" << args.help();
      return 0;
    }
    if (args.str("MODEL").empty()) throw actnn::tools::UsageError("no MODEL given");
    const int64_t steps = args.integer("steps"), batch = args.integer("batch");
    if (steps < 1 || batch < 1 || batch > 60000) throw actnn::tools::UsageError("--steps must be positive, --batch in [1, 60000]");
    const double lr = args.number("lr");
    at::manual_seed(0);

    // 1. Compile: the result trains through forward() / backward() as before.
    actnn::Options options;
    options.level = args.str("level");
    torch::jit::Module model = actnn::compile(torch::jit::load(args.str("MODEL")), options);

    // 2. Memory held for backward by one step, against plain LibTorch autograd
    // (measureStep runs steps without an optimizer: the weights stay).
    const auto train = actnn::tools::loadFashionMnist(/*train=*/true);
    const at::Tensor probe = train.images.narrow(0, 0, batch);
    torch::jit::Module reference = torch::jit::load(args.str("MODEL"));
    const auto fp = actnn::tools::measureStep(reference, probe);
    actnn::resetSwapHostPeak();
    const auto ours = actnn::tools::measureStep(model, probe);
    // L4 / L5 move the packed values to host memory: say so next to the
    // device's figure (on a CPU both are the same RAM).
    const int64_t host = actnn::swapHostPeakBytes();
    char swapped[96] = "";
    if (host > 0) std::snprintf(swapped, sizeof swapped, " (+ %.2f MiB swapped to host memory)", host / 1048576.0);
    std::printf("activation memory of one step (batch %lld): LibTorch %.2f MiB, actnn %s %.2f MiB%s: %.1fx less\n",
                (long long)batch, fp.saved_bytes / 1048576.0, options.level.c_str(), ours.saved_bytes / 1048576.0,
                swapped, double(fp.saved_bytes) / double(std::max<int64_t>(ours.saved_bytes, 1)));

    // 3. Train with an ordinary loop, and the reference beside it: both start
    // from the archive's weights (measureStep left them as they were) and see
    // the same batches.
    struct Trainee {
      torch::jit::Module* module;
      std::unique_ptr<torch::optim::SGD> sgd;
      double first = 0, last = 0, loss = 0;
    };
    auto trainee = [&](torch::jit::Module& m) {
      std::vector<at::Tensor> params;
      for (const auto& p : m.parameters()) params.push_back(p);
      return Trainee{&m, std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(lr).momentum(0.9))};
    };
    Trainee runs[] = {trainee(reference), trainee(model)};
    const at::Tensor order = at::randperm(train.images.size(0));
    const int64_t window = std::max<int64_t>(1, std::min<int64_t>(10, steps / 3));
    std::printf("%4s  %14s  %14s\n", "step", "LibTorch loss", ("actnn " + options.level + " loss").c_str());
    for (int64_t step = 0; step < steps; ++step) {
      const auto b = actnn::tools::batchOf(train, order, step % (train.images.size(0) / batch), batch);
      for (auto& r : runs) {
        r.sgd->zero_grad();
        at::Tensor loss = at::cross_entropy_loss(r.module->forward({b.images}).toTensor(), b.labels);
        loss.backward();
        r.sgd->step();
        r.loss = loss.item<double>();
        if (step < window) r.first += r.loss / window;
        if (step >= steps - window) r.last += r.loss / window;
      }
      if (step % 25 == 0 || step == steps - 1)
        std::printf("%4lld  %14.4f  %14.4f\n", (long long)step, runs[0].loss, runs[1].loss);
    }

    // 4. Evaluate: in eval mode the compiled module runs the original forward.
    const auto test = actnn::tools::loadFashionMnist(/*train=*/false, 2000);
    at::NoGradGuard no_grad;
    double accuracy[2];
    for (int k = 0; k < 2; ++k) {
      runs[k].module->eval();
      const at::Tensor predicted = runs[k].module->forward({test.images}).toTensor().argmax(1);
      accuracy[k] = predicted.eq(test.labels).to(at::kDouble).mean().item<double>();
    }
    std::printf("after %lld steps of batch %lld: LibTorch loss %.4f -> %.4f, test accuracy %.1f%%; "
                "actnn %s loss %.4f -> %.4f, test accuracy %.1f%% (2000 test images)\n",
                (long long)steps, (long long)batch, runs[0].first, runs[0].last, 100 * accuracy[0],
                options.level.c_str(), runs[1].first, runs[1].last, 100 * accuracy[1]);
    if (!(runs[1].last < runs[1].first)) {
      std::fprintf(stderr, "train_fashion_mnist: the loss did not go down\n");
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_fashion_mnist: error: %s\n", e.what());
    return 1;
  }
}
