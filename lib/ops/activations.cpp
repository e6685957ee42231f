#include "ops/activations.h"

#include "ops/vector_math.h"

namespace mm {

void relu_forward(float* out, const float* x, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] > 0.f ? x[i] : 0.f;
}

void silu_forward(float* out, const float* x, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) out[i] = silu(x[i]);
}

void softplus_forward(float* out, const float* x, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) out[i] = softplus(x[i]);
}

void relu_backward(float* dx, const float* dout, const float* x, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) dx[i] += x[i] > 0.f ? dout[i] : 0.f;
}

// The derivative of silu_vectorisable, the SiLU the model's forward passes use.
void silu_backward(float* dx, const float* dout, const float* x, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) {
    const float s = sigmoid_vectorisable(x[i]);
    dx[i] += dout[i] * s * (1.f + x[i] * (1.f - s));
  }
}

void softplus_backward(float* dx, const float* dout, const float* x, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) dx[i] += x[i] > 20.f ? dout[i] : dout[i] * sigmoid(x[i]);
}

}  // namespace mm
