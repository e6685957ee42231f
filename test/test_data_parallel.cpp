// How data-parallel mm-train splits an epoch between processes (lib/train/data_parallel.h),
// and the launch environment's rank variables (lib/dist/communicator.h).
#include <cstdlib>
#include <numeric>

#include "core/error.h"
#include "dist/communicator.h"
#include "test_util.h"
#include "train/data_parallel.h"

using namespace mm;

TEST_CASE("data parallel: the ranks' shards of an epoch are the single process's batches, split evenly") {
  std::vector<int64_t> order(23);
  std::iota(order.begin(), order.end(), 100);
  // One process: the whole order, ceil(23/4) = 6 batches.
  CHECK(global_batches(23, 4, 1) == 6);
  CHECK(shard_of_epoch(order, 0, 4, 0, 1) == order);
  // Two processes of 4: global batches of 8 (8, 8, then 7 shared 3 + 4).
  CHECK(global_batches(23, 4, 2) == 3);
  const std::vector<int64_t> r0 = shard_of_epoch(order, 0, 4, 0, 2), r1 = shard_of_epoch(order, 0, 4, 1, 2);
  CHECK(r0 == std::vector<int64_t>{100, 101, 102, 103, 108, 109, 110, 111, 116, 117, 118});
  CHECK(r1 == std::vector<int64_t>{104, 105, 106, 107, 112, 113, 114, 115, 119, 120, 121, 122});
  // From the second global batch on (a resumed epoch).
  CHECK(shard_of_epoch(order, 2, 4, 1, 2) == std::vector<int64_t>{119, 120, 121, 122});
  // A last batch with fewer than two samples per process is dropped: 19 = 2x8 + 3.
  CHECK(global_batches(19, 4, 2) == 2);
  CHECK(global_batches(20, 4, 2) == 3);
}

TEST_CASE("data parallel: a state saved by another number of processes resumes at the same sample") {
  RunProgress p;
  p.processes = 2;
  p.batches_done = 3;  // 3 x (8 x 2) = 48 samples
  adapt_progress_to_world(p, 8, 1);
  CHECK(p.batches_done == 6);
  CHECK(p.processes == 1);
  RunProgress q;
  q.processes = 2;
  q.batches_done = 1;  // 16 samples: not a whole number of 4 x 8
  CHECK_THROWS_WITH_AS(adapt_progress_to_world(q, 8, 4), doctest::Contains("resume with 2 processes"), Error);
}

TEST_CASE("launch environment: OpenMPI's, Slurm's and torchrun's rank variables") {
  const char* names[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_PROCID",
                         "SLURM_NTASKS", "SLURM_LOCALID", "RANK", "WORLD_SIZE", "LOCAL_RANK"};
  std::vector<std::pair<std::string, std::string>> saved;
  for (const char* n : names) {
    if (const char* v = std::getenv(n)) saved.emplace_back(n, v);
    unsetenv(n);
  }
  CHECK(launch_environment().size == 1);
  setenv("RANK", "3", 1);
  setenv("WORLD_SIZE", "4", 1);
  setenv("LOCAL_RANK", "1", 1);
  LaunchEnvironment e = launch_environment();
  CHECK(e.rank == 3);
  CHECK(e.size == 4);
  CHECK(e.local_rank == 1);
  CHECK(e.source == "torchrun");
  setenv("SLURM_PROCID", "0", 1);
  setenv("SLURM_NTASKS", "2", 1);
  CHECK(launch_environment().source == "Slurm");  // Slurm's variables win over torchrun's
  setenv("WORLD_SIZE", "x", 1);
  unsetenv("SLURM_PROCID");
  CHECK_THROWS_AS(launch_environment(), Error);
  setenv("WORLD_SIZE", "2", 1);
  CHECK_THROWS_AS(launch_environment(), Error);  // rank 3 of 2
  for (const char* n : names) unsetenv(n);
  for (const auto& [n, v] : saved) setenv(n.c_str(), v.c_str(), 1);
}
