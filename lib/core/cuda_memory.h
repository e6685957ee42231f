#pragma once
// Host-side entry points to CUDA memory, implemented in kernels/ when built with CUDA.
#include <cstddef>

namespace mm::cuda {
bool device_present();
void* malloc_device(size_t bytes);
void free_device(void* p);
enum class Copy { HostToDevice, DeviceToHost, DeviceToDevice };
void copy(void* dst, const void* src, size_t bytes, Copy kind);
void memset_zero(void* p, size_t bytes);
// Device memory in use on the current GPU, by every process (cudaMemGetInfo: total - free).
size_t device_bytes_in_use();
}  // namespace mm::cuda
