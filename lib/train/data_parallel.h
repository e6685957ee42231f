#pragma once
// How the processes of a data-parallel mm-train run share each epoch.
//
// Every process draws the same epoch permutation. A global batch is batch_size x world
// samples of it, in order; process r trains on its r-th slice (the even split
// floor(r*g/world) .. floor((r+1)*g/world) of a batch of g samples, so a short last batch is
// shared as evenly as the full ones). With several processes a last batch of fewer than
// 2 x world samples is dropped: every process must have two (synchronised BatchNorm would
// wait for a process without any, and a train-mode BatchNorm over the 1x1 last stage of a
// one-sample batch has no variance). With world 1 this is exactly the single-process order.
#include <cstdint>
#include <vector>

#include "train/run_state.h"

namespace mm {

// Global batches in an epoch of `rows` samples.
int64_t global_batches(int64_t rows, int64_t batch_size, int world);

// This rank's samples of global batches from_batch.. of the epoch, in the order its loader
// should cut them into micro-batches of batch_size (all full but possibly the last).
std::vector<int64_t> shard_of_epoch(const std::vector<int64_t>& order, int64_t from_batch, int64_t batch_size,
                                    int rank, int world);

// A state saved by a run with another number of processes: its position in the epoch is
// re-expressed in this run's global batches. Throws mm::Error when the samples done are not
// a whole number of them (resume that run with its own process count, or from an epoch end).
void adapt_progress_to_world(RunProgress& p, int64_t batch_size, int world);

}  // namespace mm
