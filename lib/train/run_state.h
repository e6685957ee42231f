#pragma once
// The resumable state of a training run (<out>/state.safetensors): the
// parameters, AdamW's moments, BatchNorm counters, and where the run stands.
// Everything random in a run is keyed by (seed, epoch, sample) or (seed, step),
// so this is all a resumed run needs to continue exactly as an uninterrupted
// one would (same thread count: float sums depend on it).
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mm {

class CommitQueue;  // io/durable_file.h

struct RunProgress {
  int64_t epoch = 0;           // the epoch in progress (0-based); == epochs when finished
  int64_t batches_done = 0;    // micro-batches of that epoch already trained
  int64_t step = 0;            // optimiser steps taken in the whole run
  double loss_sum = 0;         // this epoch so far: sum of per-sample losses,
  int64_t correct = 0, seen = 0;  // correct top-1 predictions, samples seen
  double train_seconds = 0;    // this epoch so far
  double best_value = 0;       // the --select metric of the best epoch so far
  int64_t best_epoch = -1;     // -1: none yet
  int64_t processes = 1;       // data-parallel processes of the run: batches_done counts global batches of
                               // batch_size x processes samples
};

struct RunState {
  RunProgress progress;
  Tensor params, adam_m, adam_v;         // (total_floats) float32 CPU each
  std::vector<int64_t> batches_tracked;  // one per BatchNorm
  std::string options_json;              // TrainOptions::to_json() of the run
};

// Written beside `path` and committed durably (io/durable_file.h): a kill at
// any moment leaves either the previous state or the new one, never a torn file.
// With `later` the file is written on the queue's thread: s's tensors must then
// stay unchanged until the queue has run (pass copies).
void save_run_state(const std::string& path, const RunState& s, CommitQueue* later = nullptr);
RunState load_run_state(const std::string& path);  // throws mm::Error naming the file

}  // namespace mm
