#include "cuda_scratch.h"

#include <atomic>

#include "cuda_common.cuh"

namespace mm::cuda {

namespace {
std::atomic<uint64_t> g_generation{0};

struct ScratchBuffer {
  void* ptr = nullptr;
  int64_t bytes = 0;
  ~ScratchBuffer() {
    if (ptr) cudaFree(ptr);  // at thread exit: nothing useful to do on failure
  }
};
}  // namespace

namespace {
void* grown_to(ScratchBuffer& buf, int64_t bytes) {
  if (bytes > buf.bytes) {
    if (buf.ptr) MM_CUDA_CHECK(cudaFree(buf.ptr));  // synchronises: pending users finish first
    buf.ptr = nullptr;
    buf.bytes = 0;
    const int64_t grown = bytes + bytes / 4;  // a little headroom for the next larger shape
    MM_CUDA_CHECK(cudaMalloc(&buf.ptr, size_t(grown)));
    buf.bytes = grown;
    ++g_generation;
  }
  return buf.ptr;
}
}  // namespace

void* reduction_scratch(int64_t bytes) {
  thread_local ScratchBuffer buf;
  return grown_to(buf, bytes);
}

uint64_t scratch_generation() { return g_generation.load(); }

void* gemm_operand_scratch(int64_t bytes) {
  thread_local ScratchBuffer buf;
  return grown_to(buf, bytes);
}

}  // namespace mm::cuda
