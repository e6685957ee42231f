#pragma once
// Row-major single-precision GEMM, through oneDNN's sgemm when the build has oneDNN, else BLAS:
//   C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C
// with op(X) = X or X^T; lda/ldb/ldc are row strides of the stored matrices.
#include <cstdint>

namespace mm {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc);

}  // namespace mm
