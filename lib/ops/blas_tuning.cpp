#include "ops/blas_tuning.h"

#include <cblas.h>
#include <strings.h>
#include <unistd.h>

#include <cstdlib>

namespace mm {

const char* blas_core_name() { return openblas_get_corename(); }

void reexec_with_best_blas_kernels(char** argv) {
  avoid_blas_thread_contention();
  if (std::getenv("OPENBLAS_CORETYPE")) return;  // the user's choice, or we already re-executed
  __builtin_cpu_init();  // its constructor may not have run yet in a static link order
  if (!__builtin_cpu_supports("avx512f")) return;
  if (strcasecmp(openblas_get_corename(), "haswell") != 0) return;
  setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
  execv("/proc/self/exe", argv);
}

bool avoid_blas_thread_contention() {
  if (std::getenv("OPENBLAS_NUM_THREADS")) return false;
  if (openblas_get_parallel() != 1) return false;  // 0: sequential build, 2: OpenMP build (shares our threads)
  openblas_set_num_threads(1);
  return true;
}

}  // namespace mm
