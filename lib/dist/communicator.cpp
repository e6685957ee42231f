#include "dist/communicator.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "core/error.h"

#ifdef MM_HAVE_MPI
#include <mpi.h>
#endif

namespace mm {

namespace {

bool env_int(const char* name, int* out) {
  const char* v = std::getenv(name);
  if (!v || !*v) return false;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > (1 << 24)) throw Error(std::string(name) + "='" + v + "' is not a process index");
  *out = int(x);
  return true;
}

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string description() const override { return "one process"; }
  void allreduce_sum(float*, int64_t) override {}
  void allreduce_sum(double*, int64_t) override {}
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override { std::_Exit(exit_code); }
};

#ifdef MM_HAVE_MPI
// MPI counts are int: large buffers go in pieces.
constexpr int64_t kMpiPiece = int64_t(1) << 26;

class MpiWorld final : public Communicator {
 public:
  MpiWorld() {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
      int provided = 0;
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        throw Error("MPI_Init_thread failed");
      owns_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiWorld() override {
    if (owns_) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string description() const override { return "MPI, " + std::to_string(size_) + " processes"; }
  void allreduce_sum(float* values, int64_t n) override { reduce(values, n, MPI_FLOAT); }
  void allreduce_sum(double* values, int64_t n) override { reduce(values, n, MPI_DOUBLE); }
  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }
  [[noreturn]] void abort(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  template <class T>
  void reduce(T* values, int64_t n, MPI_Datatype type) {
    for (int64_t off = 0; off < n; off += kMpiPiece) {
      const int count = int(std::min(kMpiPiece, n - off));
      check(MPI_Allreduce(MPI_IN_PLACE, values + off, count, type, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
    }
  }
  static void check(int rc, const char* what) {
    if (rc != MPI_SUCCESS) throw Error(std::string(what) + " failed (MPI error " + std::to_string(rc) + ")");
  }
  int rank_ = 0, size_ = 1;
  bool owns_ = false;
};
#endif

}  // namespace

LaunchEnvironment launch_environment() {
  LaunchEnvironment e;
  struct Source {
    const char *name, *rank, *size, *local;
  };
  const Source sources[] = {{"OpenMPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
                            {"Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
                            {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"}};
  for (const Source& s : sources) {
    int rank = 0, size = 0;
    if (!env_int(s.rank, &rank) || !env_int(s.size, &size)) continue;
    if (size < 1 || rank >= size)
      throw Error(std::string(s.rank) + "=" + std::to_string(rank) + " is not below " + s.size + "=" +
                  std::to_string(size));
    e.rank = rank;
    e.size = size;
    if (!env_int(s.local, &e.local_rank)) e.local_rank = 0;
    e.source = s.name;
    return e;
  }
  return e;
}

std::unique_ptr<Communicator> single_process_communicator() { return std::make_unique<SingleProcess>(); }

std::unique_ptr<Communicator> world_communicator() {
  const LaunchEnvironment env = launch_environment();
  if (env.size <= 1) return single_process_communicator();
#ifdef MM_HAVE_MPI
  auto world = std::make_unique<MpiWorld>();
  if (world->size() != env.size || world->rank() != env.rank)
    throw Error("the launcher (" + env.source + ") says rank " + std::to_string(env.rank) + " of " +
                std::to_string(env.size) + ", MPI says rank " + std::to_string(world->rank()) + " of " +
                std::to_string(world->size()) + " (torchrun-style variables need an MPI launcher: mpirun or srun)");
  return world;
#else
  throw Error("started as process " + std::to_string(env.rank) + " of " + std::to_string(env.size) + " (" +
              env.source + "), but this build has no MPI (install libopenmpi-dev and rebuild)");
#endif
}

}  // namespace mm
