// Stores a convolution's output the way actnn saves activations for the
// backward pass, at each bit width, and prints what it costs and how close the
// restored tensor is. Uses the C++ API of the runtime (actnn/runtime/ops.h).
#include <torch/torch.h>

#include <cstdio>

#include "actnn/runtime/ops.h"

int main() {
  torch::manual_seed(0);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 64, 3).padding(1));
  const at::Tensor images = torch::randn({32, 3, 56, 56});
  const at::Tensor act = torch::relu(conv(images)).detach();  // what backward would need

  std::printf("activation [32, 64, 56, 56] fp32: %.1f MiB\n", act.nbytes() / 1048576.0);
  std::printf("%5s %12s %10s %14s\n", "bits", "stored MiB", "ratio", "max |error|");
  for (int bits : {8, 4, 2, 1}) {
    const auto packed = actnn::quantize(act, {bits}, /*group_size=*/256, /*seed=*/1);
    const at::Tensor restored = actnn::dequantize(*packed);
    const double err = (restored - act).abs().max().item<double>();
    std::printf("%5d %12.2f %9.1fx %14.4f\n", bits, packed->nbytes() / 1048576.0,
                double(packed->original_nbytes()) / double(packed->nbytes()), err);
  }
  // ReLU's own backward needs only where the output was positive: 1 bit.
  const at::Tensor mask = actnn::pack_mask(act > 0);
  std::printf("relu mask: %.2f MiB (%.0fx)\n", mask.nbytes() / 1048576.0,
              double(act.nbytes()) / double(mask.nbytes()));
  const bool exact = actnn::unpack_mask(mask, act.sizes()).equal(act > 0);
  return exact ? 0 : 1;
}
