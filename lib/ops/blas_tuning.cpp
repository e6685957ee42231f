#include "ops/blas_tuning.h"

#include <cblas.h>
#include <strings.h>
#include <unistd.h>

#include <cstdlib>

namespace mm {

const char* blas_core_name() { return openblas_get_corename(); }

void reexec_with_best_blas_kernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE")) return;  // the user's choice, or we already re-executed
  __builtin_cpu_init();  // its constructor may not have run yet in a static link order
  if (!__builtin_cpu_supports("avx512f")) return;
  if (strcasecmp(openblas_get_corename(), "haswell") != 0) return;
  setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
  execv("/proc/self/exe", argv);
}

}  // namespace mm
