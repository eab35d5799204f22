// actnn-bench kernels: throughput of the compression kernels as GB/s of fp32
// activations, next to the same process's plain copy of the same bytes (the
// bandwidth the kernels compete with: quantize reads the input once and
// writes b/32 of it, dequantize the reverse).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <malloc.h>

#include <iostream>

#include "actnn/runtime/ops.h"
#include "args.h"
#include "bench.h"
#include "json.h"

namespace actnn {
namespace tools {

int bench_kernels(int argc, char** argv) {
  Args args;
  args.flag("mib", "64", "size of the fp32 input in MiB")
      .flag("samples", "64", "samples along dim 0 (groups never span samples)")
      .flag("group-size", "256", "values per quantization group")
      .flag("repeat", "10", "timed runs per figure; the median is reported")
      .flag("device", "cpu", "cpu or cuda")
      .flag("threads", "0", "CPU threads (0: LibTorch's default)");
  if (!args.parse(argc, argv, 2)) {
    std::cout << "usage: actnn-bench kernels [flags]\n" << args.help();
    return 0;
  }
  const int64_t mib = args.integer("mib"), samples = args.integer("samples");
  const int64_t group = args.integer("group-size"), repeat = args.integer("repeat");
  const int64_t threads = args.integer("threads");
  const std::string device = args.str("device");
  if (mib < 1) throw UsageError("--mib must be at least 1");
  if (samples < 1 || (mib << 18) % samples != 0) {
    throw UsageError("--samples must divide the " + std::to_string(mib << 18) + " values");
  }
  if (repeat < 1) throw UsageError("--repeat must be at least 1");
  if (device != "cpu" && device != "cuda") throw UsageError("--device must be cpu or cuda, got '" + device + "'");
  if (device == "cuda" && !torch::cuda::is_available()) {
    throw UsageError("--device=cuda: no CUDA device in this process");
  }
  if (threads > 0) at::set_num_threads(int(threads));

  // LibTorch's CPU allocator is malloc. glibc serves blocks above its mmap
  // threshold (at most 32 MiB) with fresh mappings, so every op on a 64 MiB
  // tensor would pay page faults and kernel zeroing for its output, which is
  // the OS's cost, not the kernels'. Keep freed memory in the heap instead, as
  // a caching allocator would; the copy baseline writes into a preallocated
  // tensor, so both sides measure memory traffic and compute only.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);

  const bool cuda = device == "cuda";
  const auto opts = at::TensorOptions().device(cuda ? at::kCUDA : at::kCPU);
  const int64_t numel = mib << 18;
  const double bytes = double(numel) * 4;
  at::Generator gen = at::detail::createCPUGenerator(0);
  const at::Tensor x = at::randn({samples, numel / samples}, gen).to(opts.device());
  at::Tensor dst = at::empty_like(x);
  const std::function<void()> sync = [cuda] {
    if (cuda) torch::cuda::synchronize();
  };

  auto line = [&](const char* op, int bits, double seconds, double copy_gbps) {
    const double gbps = bytes / seconds / 1e9;
    return JsonLine()
        .add("op", op)
        .add("bits", bits)
        .add("gbps", gbps)
        .add("ratio", gbps / copy_gbps)
        .add("seconds", seconds)
        .add("bytes", int64_t(bytes))
        .add("group_size", group)
        .add("device", device)
        .add("threads", int64_t(cuda ? 0 : at::get_num_threads()));
  };

  const double copy_s = median_seconds([&] { dst.copy_(x); }, int(repeat), 2, sync);
  const double copy_gbps = bytes / copy_s / 1e9;
  std::cout << line("copy", 32, copy_s, copy_gbps);
  for (int bits : {1, 2, 4, 8}) {
    int64_t seed = 0;
    c10::intrusive_ptr<PackedActivation> packed;
    const double q_s = median_seconds(
        [&] { packed = quantize(x, {bits}, group, seed++, 0); }, int(repeat), 2, sync);
    std::cout << line("quantize", bits, q_s, copy_gbps).add("packed_bytes", packed->nbytes());
    at::Tensor y;
    const double d_s = median_seconds([&] { y = dequantize(*packed); }, int(repeat), 2, sync);
    std::cout << line("dequantize", bits, d_s, copy_gbps);
    packed->dither = true;  // regenerates quantize's random bits
    const double dd_s = median_seconds([&] { y = dequantize(*packed); }, int(repeat), 2, sync);
    std::cout << line("dequantize_dithered", bits, dd_s, copy_gbps);
  }
  return 0;
}

}  // namespace tools
}  // namespace actnn
