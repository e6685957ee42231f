#include "ops/linear.h"

#include "ops/gemm.h"

namespace mm {

void linear_forward(float* out, const float* x, const float* weight, const float* bias, int64_t N,
                    int64_t Cin, int64_t Cout) {
  if (bias) {
#pragma omp parallel for
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < Cout; ++o) out[n * Cout + o] = bias[o];
  }
  sgemm(false, true, N, Cout, Cin, 1.f, x, Cin, weight, Cin, bias ? 1.f : 0.f, out, Cout);
}

void linear_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, int64_t N, int64_t Cin, int64_t Cout) {
  if (dx) sgemm(false, false, N, Cin, Cout, 1.f, dout, Cout, weight, Cin, 1.f, dx, Cin);
  if (dweight) sgemm(true, false, Cout, Cin, N, 1.f, dout, Cout, x, Cin, 1.f, dweight, Cin);
  if (dbias) {
    // Column sums, parallel over output features so no two threads share a dbias entry.
#pragma omp parallel for
    for (int64_t o = 0; o < Cout; ++o) {
      float s = 0.f;
      for (int64_t n = 0; n < N; ++n) s += dout[n * Cout + o];
      dbias[o] += s;
    }
  }
}

}  // namespace mm
