// actnn-bench's suites. Each is a subcommand, listed once in
// bench_registry.cpp, that parses its own flags and prints JSON lines.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace actnn {
namespace tools {

struct BenchCommand {
  std::string name;
  std::string summary;
  // argv[0] is the program, argv[1] the subcommand; returns the exit status.
  std::function<int(int argc, char** argv)> run;
};

const std::vector<BenchCommand>& bench_commands();

// Suites (one file each).
int bench_kernels(int argc, char** argv);
int bench_step(int argc, char** argv);
int bench_memory(int argc, char** argv);
int bench_accuracy(int argc, char** argv);
int bench_gradients(int argc, char** argv);
int bench_plan(int argc, char** argv);
int bench_peak(int argc, char** argv);
int bench_maxbatch(int argc, char** argv);
int bench_throughput(int argc, char** argv);
int bench_soak(int argc, char** argv);

// Median wall time of `repeat` runs of f after `warmup` runs; `sync` waits
// for queued device work before each clock reading.
double median_seconds(const std::function<void()>& f, int repeat, int warmup,
                      const std::function<void()>& sync);

}  // namespace tools
}  // namespace actnn
