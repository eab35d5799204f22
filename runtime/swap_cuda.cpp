// The CUDA swap backend (swap.h): pinned host memory, copies on one side
// stream per device, events between the side stream and the compute stream.
// Compiled only when the LibTorch in use has CUDA (and compile-checked
// otherwise, like ops_cuda.cpp).
//
// Ordering, per copy:
//  * to the host: the side stream waits for the compute stream (the producer's
//    kernel has written the value), copies, and the device tensor is recorded
//    on the side stream so the caching allocator keeps it until the copy has
//    read it;
//  * back to the device: the side stream waits for the compute stream (an
//    arena slice written back may have been read by earlier kernels), copies,
//    and records an event that swap_wait makes the compute stream wait on;
//  * fenceHostCopies: the compute stream waits for everything the side stream
//    has been given, before a planned arena slice is overwritten.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <map>
#include <mutex>

#include "actnn/runtime/swap.h"

namespace actnn {
namespace {

struct CudaTicket : SwapTicket {
  at::cuda::CUDAEvent done;
  void wait() override { done.block(c10::cuda::getCurrentCUDAStream(done.device_index())); }
};

struct CudaSwapBackend : SwapBackend {
  std::mutex mutex;
  std::map<c10::DeviceIndex, c10::cuda::CUDAStream> side;

  c10::cuda::CUDAStream sideStream(c10::DeviceIndex device) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = side.find(device);
    if (it == side.end()) it = side.emplace(device, c10::cuda::getStreamFromPool(false, device)).first;
    return it->second;
  }

  // The side stream waits for the work the compute stream holds so far.
  c10::cuda::CUDAStream follow(c10::Device device) {
    auto compute = c10::cuda::getCurrentCUDAStream(device.index());
    auto stream = sideStream(device.index());
    at::cuda::CUDAEvent ready;
    ready.record(compute);
    ready.block(stream);
    return stream;
  }

  at::Tensor toHost(const at::Tensor& t) override {
    const at::Tensor src = t.contiguous();
    c10::cuda::CUDAGuard guard(src.device());
    auto stream = follow(src.device());
    at::Tensor host = at::empty(src.sizes(), src.options().device(c10::kCPU).pinned_memory(true));
    {
      c10::cuda::CUDAStreamGuard on_side(stream);
      host.copy_(src, /*non_blocking=*/true);
    }
    c10::cuda::CUDACachingAllocator::recordStream(src.storage().data_ptr(), stream);
    return host;
  }

  std::unique_ptr<SwapTicket> toDevice(const at::Tensor& host, const at::Tensor& dst) override {
    c10::cuda::CUDAGuard guard(dst.device());
    auto stream = follow(dst.device());
    auto ticket = std::make_unique<CudaTicket>();
    {
      c10::cuda::CUDAStreamGuard on_side(stream);
      dst.copy_(host, /*non_blocking=*/true);
      ticket->done.record(stream);
    }
    return ticket;
  }

  void fenceHostCopies(c10::Device device) override {
    c10::cuda::CUDAGuard guard(device);
    at::cuda::CUDAEvent drained;
    drained.record(sideStream(device.index()));
    drained.block(c10::cuda::getCurrentCUDAStream(device.index()));
  }
};

const bool registered = [] {
  static CudaSwapBackend backend;
  registerSwapBackend(c10::DeviceType::CUDA, &backend);
  return true;
}();

}  // namespace
}  // namespace actnn
