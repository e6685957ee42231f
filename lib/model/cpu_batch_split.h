#pragma once
// How a CPU eval forward spreads over its OpenMP threads.
//
//   Ops:    the whole batch goes through each op in turn, every op parallel inside (OpenMP
//           loops, BLAS/oneDNN threads). A fork/join per op, stage 0 memory-bound over the
//           whole batch's activations, little work per thread at the last stages.
//   Images: the batch is cut into one contiguous sub-batch per thread and each thread runs
//           the whole forward of its sub-batch alone, its ops single-threaded, with its own
//           activations. One fork/join per forward, and one image's activations stay in
//           its core's caches. Needs at least one image per thread, and loses where the
//           sub-batches are uneven (7 images on 4 threads take as long as 8).
//
// MM_CPU_BATCH_SPLIT=auto|ops|images in the environment picks the mode (for A/B runs;
// ScopedBatchSplit in code);
// auto (the default, or unset) takes images where split_efficiency() is at least
// kMinSplitEfficiency, ops where not (batch 1, batches smaller than the thread count,
// 1 thread). docs/benchmarks.md ("Thread scaling") has the measurements.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mm {

enum class BatchSplit { Auto, Ops, Images };

// "auto", "ops" or "images"; anything else throws mm::Error naming the choices.
BatchSplit batch_split_from_name(const std::string& name);
// MM_CPU_BATCH_SPLIT (unset or empty: Auto), read on every call.
BatchSplit batch_split_from_env();
// The mode the eval forwards take: a ScopedBatchSplit's where one is alive, else the environment's.
BatchSplit batch_split_setting();

// Overrides MM_CPU_BATCH_SPLIT for the whole process while alive (tests, A/B comparisons in
// code); nested scopes restore the one before. Not for concurrent use from several threads.
class ScopedBatchSplit {
 public:
  explicit ScopedBatchSplit(BatchSplit split);
  ~ScopedBatchSplit();
  ScopedBatchSplit(const ScopedBatchSplit&) = delete;
  ScopedBatchSplit& operator=(const ScopedBatchSplit&) = delete;

 private:
  int previous_;
};

// The share of `threads` thread-time that B images cut into min(B, threads) contiguous
// sub-batches keep busy, each image costing the same: B / (threads * ceil(B / threads)).
double split_efficiency(int64_t B, int threads);
constexpr double kMinSplitEfficiency = 0.75;

// How many sub-batches a forward of B images on `threads` threads runs: 1 means per-op
// parallelism (Ops, or Auto below kMinSplitEfficiency, or one thread or one image).
int sub_batch_count(BatchSplit split, int64_t B, int threads);

// Runs fn(worker, first, count) for `workers` contiguous sub-batches of B images (sizes
// differing by at most one, larger first), each on a thread of its own (an OpenMP team of
// `workers` threads). Inside fn every OpenMP region and every BLAS/oneDNN call runs
// single-threaded (the worker's nthreads ICV is 1). An exception thrown by fn is rethrown
// here once every worker has finished.
void run_sub_batches(int64_t B, int workers, const std::function<void(int, int64_t, int64_t)>& fn);

// An eval forward of B images (image_floats each) into logits (classes each) through
// run_sub_batches: worker w runs fn(*states[w], its logits, its images, its image count) with
// state of its own (activations), made here where missing and kept for the next call, so that
// each worker sizes, and first touches, its own.
template <class State, class Fn>
void forward_sub_batches(float* logits, const float* images, int64_t B, int64_t image_floats, int64_t classes,
                         int workers, std::vector<std::unique_ptr<State>>& states, Fn&& fn) {
  while (states.size() < size_t(workers)) states.push_back(std::make_unique<State>());
  run_sub_batches(B, workers, [&](int w, int64_t first, int64_t count) {
    fn(*states[size_t(w)], logits + first * classes, images + first * image_floats, count);
  });
}

}  // namespace mm
