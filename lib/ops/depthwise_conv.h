#pragma once
// Depthwise 3x3 convolution, padding 1, stride 1, with bias, on channels-last
// activations (PyTorch Conv2d(C, C, 3, padding=1, groups=C)), CPU:
//
//   out[b,h,w,c] = bias[c] + sum_{kh,kw} weight[c,0,kh,kw] * x[b, h+kh-1, w+kw-1, c]
//
// Positions outside the image read as zero. Loops run channels innermost so they
// vectorise; rows (b,h) are split over OpenMP threads.
// Forward overwrites `out`; backward ACCUMULATES (+=) into dx, dweight, dbias,
// any of which may be nullptr to skip it.
#include <cstdint>
#include <functional>

namespace mm {

// out:    (B,H,W,C)   overwritten
// x:      (B,H,W,C)
// weight: (C,1,3,3)
// bias:   (C) or nullptr for no bias
void dwconv3x3_forward(float* out, const float* x, const float* weight, const float* bias,
                       int64_t B, int64_t H, int64_t W, int64_t C);

// Inference: u = silu(dwconv3x3_forward(x)) in one pass over x, equal to the two ops one after
// the other bit for bit. Each finished row p of u (C floats, still in cache) goes to
// store(p, row) where store is set (to write a bf16 copy, say); called from the threads of
// the op's parallel loop, once per row.
void dwconv3x3_silu_forward(float* u, const float* x, const float* weight, const float* bias, int64_t B, int64_t H,
                            int64_t W, int64_t C, const std::function<void(int64_t, const float*)>& store = nullptr);

// dx:      (B,H,W,C)   += dL/dx       (nullptr: skip)
// dweight: (C,1,3,3)   += dL/dweight  (nullptr: skip)
// dbias:   (C)         += dL/dbias    (nullptr: skip)
// dout:    (B,H,W,C)   dL/dout
// x:       (B,H,W,C)   the forward input (read only for dweight)
// weight:  (C,1,3,3)   (read only for dx)
void dwconv3x3_backward(float* dx, float* dweight, float* dbias, const float* dout,
                        const float* x, const float* weight, int64_t B, int64_t H, int64_t W,
                        int64_t C);

}  // namespace mm
