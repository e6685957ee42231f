#pragma once
// The processes of a data-parallel run and the collectives mm-train needs between them.
//
// mm-train starts one process per worker (`mpirun -np N mm-train ...`, or Slurm's srun);
// every process trains on its shard of each global batch, and after backward the flat
// gradient buffers are summed across processes, so every process takes the same optimiser
// step and holds the same weights. Transport is a library's (MPI for CPU processes), never
// our own. A run started without a launcher is a world of one, with no library at all.
#include <cstdint>
#include <memory>
#include <string>

namespace mm {

// Who this process is, from the launcher's environment: OpenMPI's OMPI_COMM_WORLD_RANK/SIZE/
// LOCAL_RANK, Slurm's SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, or torchrun's RANK/WORLD_SIZE/
// LOCAL_RANK, in that order; rank 0 of 1 when none is set.
struct LaunchEnvironment {
  int rank = 0, size = 1, local_rank = 0;
  std::string source = "none";  // "OpenMPI", "Slurm", "torchrun" or "none"
};
LaunchEnvironment launch_environment();

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string description() const = 0;  // for the log: "MPI, 2 processes" ...

  // Replace each of the n values by its sum over every process. Every process calls the
  // collectives in the same order with the same n. Sums over processes are added in rank
  // order for a given world size.
  virtual void allreduce_sum(float* values, int64_t n) = 0;
  virtual void allreduce_sum(double* values, int64_t n) = 0;
  virtual void barrier() = 0;
  // Ends every process of the run with this exit code: what a process that failed calls, so
  // that none is left waiting in a collective for it.
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

// A world of one: collectives do nothing.
std::unique_ptr<Communicator> single_process_communicator();

// The run's communicator: MPI when the launch environment says there is more than one
// process (the build must have MPI: otherwise mm::Error says so), else a world of one.
std::unique_ptr<Communicator> world_communicator();

}  // namespace mm
