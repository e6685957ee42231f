#pragma once
// Elementwise activations on n floats. out may alias x in forward.
#include <cmath>
#include <cstdint>

namespace mm {

inline float silu(float x) { return x / (1.f + std::exp(-x)); }
inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }
// PyTorch's softplus with beta=1, threshold=20: returns x above the threshold.
inline float softplus(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }

void relu_forward(float* out, const float* x, int64_t n);
void silu_forward(float* out, const float* x, int64_t n);
void softplus_forward(float* out, const float* x, int64_t n);

// Accumulate dx += dout * f'(x).
void relu_backward(float* dx, const float* dout, const float* x, int64_t n);
void silu_backward(float* dx, const float* dout, const float* x, int64_t n);
void softplus_backward(float* dx, const float* dout, const float* x, int64_t n);

}  // namespace mm
