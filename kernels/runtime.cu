// Streams, async copies, CUDA graphs and event timers behind cuda_ops.h.
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace mm::cuda {

Stream stream_create() {
  cudaStream_t s = nullptr;
  MM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

Stream stream_create_blocking() {
  cudaStream_t s = nullptr;
  MM_CUDA_CHECK(cudaStreamCreate(&s));
  return s;
}

void stream_destroy(Stream s) {
  if (s) cudaStreamDestroy(s);  // a destructor path: nothing useful to do on failure
}

void stream_sync(Stream s) { MM_CUDA_CHECK(cudaStreamSynchronize(s)); }

void copy_async(void* dst, const void* src, size_t bytes, Stream s) {
  MM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
}

void memset_zero_async(void* p, size_t bytes, Stream s) { MM_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, s)); }

int sm_count() {
  int dev = 0, n = 0;
  MM_CUDA_CHECK(cudaGetDevice(&dev));
  MM_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

void memory_info(size_t* free_bytes, size_t* total_bytes) { MM_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes)); }

std::string device_name() {
  int dev = 0;
  MM_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  MM_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return p.name;
}

void* malloc_host_pinned(size_t bytes) {
  void* p = nullptr;
  const cudaError_t e = cudaMallocHost(&p, bytes);
  if (e != cudaSuccess)
    throw Error("cannot allocate " + std::to_string(bytes >> 20) + " MiB of page-locked host memory: " +
                cudaGetErrorString(e));
  return p;
}

void free_host_pinned(void* p) {
  if (p) cudaFreeHost(p);  // a destructor path: nothing useful to do on failure
}

struct Event::Impl {
  cudaEvent_t e = nullptr;
  bool recorded = false;
};

Event::Event() : impl_(std::make_unique<Impl>()) {
  MM_CUDA_CHECK(cudaEventCreateWithFlags(&impl_->e, cudaEventDisableTiming));
}

Event::~Event() { cudaEventDestroy(impl_->e); }

void Event::record(Stream s) {
  MM_CUDA_CHECK(cudaEventRecord(impl_->e, s));
  impl_->recorded = true;
}

void Event::synchronize() {
  if (impl_->recorded) MM_CUDA_CHECK(cudaEventSynchronize(impl_->e));
}

void Event::wait_in(Stream s) {
  if (impl_->recorded) MM_CUDA_CHECK(cudaStreamWaitEvent(s, impl_->e, 0));
}

struct CapturedGraph::Impl {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
};

CapturedGraph::CapturedGraph() : impl_(std::make_unique<Impl>()) {}
CapturedGraph::~CapturedGraph() { reset(); }

void CapturedGraph::reset() {
  if (impl_->exec) cudaGraphExecDestroy(impl_->exec);
  if (impl_->graph) cudaGraphDestroy(impl_->graph);
  impl_->exec = nullptr;
  impl_->graph = nullptr;
}

void CapturedGraph::begin_capture(Stream s) {
  reset();
  MM_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
}

void CapturedGraph::end_capture(Stream s) {
  MM_CUDA_CHECK(cudaStreamEndCapture(s, &impl_->graph));
  MM_CUDA_CHECK(cudaGraphInstantiate(&impl_->exec, impl_->graph, 0));
}

void CapturedGraph::capture(Stream s, const std::function<void()>& record) {
  begin_capture(s);
  try {
    record();
  } catch (...) {
    cudaGraph_t partial = nullptr;
    if (cudaStreamEndCapture(s, &partial) == cudaSuccess && partial) cudaGraphDestroy(partial);
    cudaGetLastError();  // an invalidated capture leaves its error behind: it is the exception's
    reset();
    throw;
  }
  end_capture(s);
}

void CapturedGraph::launch(Stream s) {
  MM_CHECK(impl_->exec, "CapturedGraph::launch before a capture");
  MM_CUDA_CHECK(cudaGraphLaunch(impl_->exec, s));
}

bool CapturedGraph::ready() const { return impl_->exec != nullptr; }

struct StreamTimer::Impl {
  cudaEvent_t a = nullptr, b = nullptr;
};

StreamTimer::StreamTimer() : impl_(std::make_unique<Impl>()) {
  MM_CUDA_CHECK(cudaEventCreate(&impl_->a));
  MM_CUDA_CHECK(cudaEventCreate(&impl_->b));
}

StreamTimer::~StreamTimer() {
  cudaEventDestroy(impl_->a);
  cudaEventDestroy(impl_->b);
}

void StreamTimer::start(Stream s) { MM_CUDA_CHECK(cudaEventRecord(impl_->a, s)); }

double StreamTimer::stop_ms(Stream s) {
  MM_CUDA_CHECK(cudaEventRecord(impl_->b, s));
  MM_CUDA_CHECK(cudaEventSynchronize(impl_->b));
  float ms = 0;
  MM_CUDA_CHECK(cudaEventElapsedTime(&ms, impl_->a, impl_->b));
  return ms;
}

}  // namespace mm::cuda
