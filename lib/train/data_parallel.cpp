#include "train/data_parallel.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace mm {

int64_t global_batches(int64_t rows, int64_t batch_size, int world) {
  const int64_t global = batch_size * world, rest = rows % global;
  // Two samples per process at least: a train-mode BatchNorm over a 1x1 last stage needs two.
  const int64_t least = world > 1 ? 2 * world : 1;
  return rows / global + (rest >= least ? 1 : 0);
}

std::vector<int64_t> shard_of_epoch(const std::vector<int64_t>& order, int64_t from_batch, int64_t batch_size,
                                    int rank, int world) {
  const int64_t n = int64_t(order.size()), global = batch_size * world;
  const int64_t batches = global_batches(n, batch_size, world);
  std::vector<int64_t> rows;
  for (int64_t k = from_batch; k < batches; ++k) {
    const int64_t start = k * global, g = std::min(global, n - start);
    const int64_t lo = start + rank * g / world, hi = start + (rank + 1) * g / world;
    rows.insert(rows.end(), order.begin() + lo, order.begin() + hi);
  }
  return rows;
}

void adapt_progress_to_world(RunProgress& p, int64_t batch_size, int world) {
  if (p.processes == world) return;
  const int64_t samples = p.batches_done * batch_size * p.processes, global = batch_size * world;
  MM_CHECK(samples % global == 0,
           "the state was saved by " + std::to_string(p.processes) + " processes " + std::to_string(p.batches_done) +
               " batches into epoch " + std::to_string(p.epoch + 1) + ", which is not a whole number of this run's " +
               std::to_string(world) + "-process batches; resume with " + std::to_string(p.processes) +
               " processes, or from the state saved at an epoch end");
  p.batches_done = samples / global;
  p.processes = world;
}

}  // namespace mm
