#include "model/cpu_batch_split.h"

#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <exception>
#include <vector>

#include "core/error.h"

namespace mm {

BatchSplit batch_split_from_name(const std::string& name) {
  if (name == "auto") return BatchSplit::Auto;
  if (name == "ops") return BatchSplit::Ops;
  if (name == "images") return BatchSplit::Images;
  throw Error("CPU batch split '" + name + "': expected auto, ops or images");
}

BatchSplit batch_split_from_env() {
  const char* v = std::getenv("MM_CPU_BATCH_SPLIT");
  if (!v || !*v) return BatchSplit::Auto;
  try {
    return batch_split_from_name(v);
  } catch (const Error& e) {
    throw Error(std::string("MM_CPU_BATCH_SPLIT: ") + e.what());
  }
}

namespace {
std::atomic<int> scoped_split{-1};  // a BatchSplit while a ScopedBatchSplit is alive, -1 when none
}  // namespace

BatchSplit batch_split_setting() {
  const int scoped = scoped_split.load();
  return scoped >= 0 ? BatchSplit(scoped) : batch_split_from_env();
}

ScopedBatchSplit::ScopedBatchSplit(BatchSplit split) : previous_(scoped_split.exchange(int(split))) {}
ScopedBatchSplit::~ScopedBatchSplit() { scoped_split.store(previous_); }

double split_efficiency(int64_t B, int threads) {
  if (B < 1 || threads < 1) return 0.;
  const int64_t rounds = (B + threads - 1) / threads;  // images on the busiest thread
  return double(B) / (double(threads) * double(rounds));
}

int sub_batch_count(BatchSplit split, int64_t B, int threads) {
  // Inside a parallel region nested regions get one thread anyway: nothing to split over.
  if (threads < 2 || B < 2 || split == BatchSplit::Ops || omp_in_parallel()) return 1;
  if (split == BatchSplit::Auto && split_efficiency(B, threads) < kMinSplitEfficiency) return 1;
  return int(B < threads ? B : threads);
}

void run_sub_batches(int64_t B, int workers, const std::function<void(int, int64_t, int64_t)>& fn) {
  MM_CHECK(workers >= 1 && workers <= B, "run_sub_batches: " + std::to_string(workers) + " workers for " +
                                             std::to_string(B) + " images");
  const int64_t base = B / workers, extra = B % workers;  // the first `extra` workers take one more
  std::vector<std::exception_ptr> errors(static_cast<size_t>(workers));
#pragma omp parallel num_threads(workers)
  {
    // nthreads-var is per implicit task: this makes the ops' own regions and the GEMM
    // libraries' (OpenBLAS and oneDNN both size their teams from omp_get_max_threads())
    // single-threaded here, and leaves the caller's setting as it was after the region.
    omp_set_num_threads(1);
    // A team smaller than asked (OMP_DYNAMIC, thread limits) still covers every worker.
    for (int w = omp_get_thread_num(); w < workers; w += omp_get_num_threads()) {
      const int64_t first = w * base + (w < extra ? w : extra), count = base + (w < extra ? 1 : 0);
      try {
        fn(w, first, count);
      } catch (...) {
        errors[size_t(w)] = std::current_exception();
      }
    }
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace mm
