#pragma once
// Fully connected layer, PyTorch weight layout (out_features, in_features).
#include <cstdint>

namespace mm {

// out: (N,Cout) = x (N,Cin) · weight^T (Cin,Cout) + bias (Cout); bias may be nullptr.
void linear_forward(float* out, const float* x, const float* weight, const float* bias, int64_t N,
                    int64_t Cin, int64_t Cout);

// Accumulates dx (N,Cin), dweight (Cout,Cin), dbias (Cout); any may be nullptr.
void linear_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, int64_t N, int64_t Cin, int64_t Cout);

}  // namespace mm
