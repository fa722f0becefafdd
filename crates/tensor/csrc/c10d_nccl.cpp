// The NCCL half of the c10d shim (see c10d_shim.cpp): compiled by
// crates/tensor/build.rs only when libtorch has libtorch_cuda.so and the CUDA
// toolkit and NCCL headers are found; a failure to compile it leaves the
// build Gloo-only, with a warning.

#include <chrono>

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

c10::intrusive_ptr<c10d::Backend> lmzh_c10d_make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(
      store, rank, world, options);
}
