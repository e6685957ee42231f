// CUDA memory primitives behind mm::Tensor's Device::CUDA storage.
#include "core/cuda_memory.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace mm::cuda {

static void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

bool device_present() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void* malloc_device(size_t bytes) {
  void* p = nullptr;
  check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
  return p;
}

void free_device(void* p) { cudaFree(p); }

void copy(void* dst, const void* src, size_t bytes, Copy kind) {
  cudaMemcpyKind k = kind == Copy::HostToDevice   ? cudaMemcpyHostToDevice
                     : kind == Copy::DeviceToHost ? cudaMemcpyDeviceToHost
                                                  : cudaMemcpyDeviceToDevice;
  check(cudaMemcpy(dst, src, bytes, k), "cudaMemcpy");
}

void memset_zero(void* p, size_t bytes) { check(cudaMemset(p, 0, bytes), "cudaMemset"); }

size_t device_bytes_in_use() {
  size_t free_bytes = 0, total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  return total_bytes - free_bytes;
}

}  // namespace mm::cuda
