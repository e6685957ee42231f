#pragma once
// What a MedMambaCuda training step needs around its kernels: page-locked uploads of the
// batch and the drop-path factors, and the step's CUDA graphs. CUDA builds only; included by
// medmamba_cuda.cpp alone.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <thread>

#include "cuda_ops.h"
#include "cuda_scratch.h"

namespace mm::cuda_step {

namespace c = mm::cuda;

// Host floats to the device through page-locked memory. A pageable cudaMemcpy first waits for
// the stream to drain, then moves the data through the driver's own staging copy, one thread
// wide: MedMamba-T's batch of 64 images is 38.5 MB a step. Here the host's threads fill a
// chunk of the pinned buffer while the previous chunk crosses the bus, and the call returns
// once the last chunk is queued: the source may change afterwards, the device copy is ordered
// on the stream.
class PinnedUpload {
 public:
  PinnedUpload() = default;
  PinnedUpload(const PinnedUpload&) = delete;
  PinnedUpload& operator=(const PinnedUpload&) = delete;
  ~PinnedUpload() { c::free_host_pinned(host_); }

  void upload(float* dst, const float* src, int64_t n, c::Stream s) {
    done_.synchronize();  // the last upload has left the staging buffer
    if (n > capacity_) {
      c::free_host_pinned(host_);
      host_ = nullptr;  // a failed allocation below leaves an empty buffer, not a freed one
      capacity_ = 0;
      host_ = static_cast<float*>(c::malloc_host_pinned(size_t(n) * sizeof(float)));
      capacity_ = n;
    }
    constexpr int64_t kChunk = int64_t(1) << 21, kPiece = int64_t(1) << 16;  // 8 MB, 256 KB
    for (int64_t off = 0; off < n; off += kChunk) {
      const int64_t len = std::min(kChunk, n - off), pieces = (len + kPiece - 1) / kPiece;
      float* stage = host_ + off;
#pragma omp parallel for schedule(static) if (pieces > 1)
      for (int64_t p = 0; p < pieces; ++p) {
        const int64_t b = p * kPiece;
        std::memcpy(stage + b, src + off + b, size_t(std::min(kPiece, len - b)) * sizeof(float));
      }
      c::copy_async(dst + off, stage, size_t(len) * sizeof(float), s);
    }
    done_.record(s);
  }

 private:
  float* host_ = nullptr;
  int64_t capacity_ = 0;
  c::Event done_;
};

// A training step's forward and backward as CUDA graphs: about 1,700 launches a MedMamba-T step
// become two. A batch shape runs eagerly once (scratch buffers grow, cuBLAS settles on its
// kernels), is captured on its second step and replayed after that. A graph holds addresses,
// so it is dropped when the activations are reallocated (another batch shape), when a scratch
// buffer grows, or when another host thread, with its own scratch and cuBLAS handle, calls.
// On by default: replayed steps are bit-equal to eager ones (test_cuda_train_model.cpp), and
// on an H100 they save 4% of a T step at batch 64, 15% at batch 8. MM_TRAIN_GRAPHS=0: eager.
class StepGraphs {
 public:
  struct Pass {
    c::CapturedGraph graph;
    bool ran_eagerly = false;
    uint64_t scratch_generation = 0;
    std::thread::id thread;
  };
  Pass forward, backward;

  StepGraphs() {
    const char* v = std::getenv("MM_TRAIN_GRAPHS");
    enabled_ = !(v && std::string(v) == "0");
  }
  void drop() {
    for (Pass* p : {&forward, &backward}) {
      p->graph.reset();
      p->ran_eagerly = false;
    }
  }
  // Queues `kernels` on s: eagerly, or as the pass's graph.
  void run(Pass& p, c::Stream s, const std::function<void()>& kernels) {
    const uint64_t generation = c::scratch_generation();
    const std::thread::id self = std::this_thread::get_id();
    if (p.graph.ready() && (p.scratch_generation != generation || p.thread != self)) {
      p.graph.reset();
      p.ran_eagerly = false;
    }
    if (!enabled_ || !p.ran_eagerly) {
      kernels();
      p.ran_eagerly = true;
      return;
    }
    if (!p.graph.ready()) {
      try {
        p.graph.capture(s, kernels);
      } catch (const std::exception&) {  // something in the pass cannot be captured: stay eager
        enabled_ = false;
        kernels();
        return;
      }
      p.scratch_generation = generation;
      p.thread = self;
    }
    p.graph.launch(s);
  }

 private:
  bool enabled_ = false;
};

}  // namespace mm::cuda_step
