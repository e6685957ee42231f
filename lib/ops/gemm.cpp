#include "ops/gemm.h"

#include <string>

#include "core/error.h"

#ifdef MM_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#else
#include <cblas.h>
#endif

namespace mm {

// With oneDNN in the build its sgemm runs the float32 GEMMs: it picks AVX-512 kernels by
// itself, where OpenBLAS 0.3.21 falls back to its AVX2 (Haswell) kernels on CPUs it does
// not know unless OPENBLAS_CORETYPE is set. Measured on the model's shapes (MedMamba-T,
// 224 px, batch 8, 1 thread): oneDNN 68-76 ms, OpenBLAS SkylakeX 83 ms, Haswell 129 ms.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc) {
  if (M == 0 || N == 0) return;
#ifdef MM_HAVE_DNNL
  const dnnl_status_t status =
      dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  MM_CHECK(status == dnnl_success, "sgemm (oneDNN) failed with status " + std::to_string(int(status)) + " for M=" +
                                       std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K));
#else
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, int(M), int(N), int(K), alpha, A, int(lda), B,
              int(ldb), beta, C, int(ldc));
#endif
}

}  // namespace mm
