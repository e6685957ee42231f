#pragma once
// Data-movement ops of the MedMamba block and stage boundaries, all channels-last.
#include <cstdint>

namespace mm {

// x: (P,2c) -> left: (P,c) = x[..., :c], right: (P,c) = x[..., c:]
void split_halves_forward(float* left, float* right, const float* x, int64_t P, int64_t c);
// Accumulates dx (P,2c) from dleft, dright (P,c).
void split_halves_backward(float* dx, const float* dleft, const float* dright, int64_t P, int64_t c);

// Channel shuffle (groups 2) of concat(l, s): out: (P,2c), out[2m] = l[m], out[2m+1] = s[m].
void concat_shuffle_forward(float* out, const float* l, const float* s, int64_t P, int64_t c);
// Accumulates dl, ds (P,c) from dout (P,2c).
void concat_shuffle_backward(float* dl, float* ds, const float* dout, int64_t P, int64_t c);

// Patch merging gather: x (B,H,W,C) -> out (B,H/2,W/2,4C) = concat(x[0::2,0::2], x[1::2,0::2],
// x[0::2,1::2], x[1::2,1::2]) along channels (the reference's x0,x1,x2,x3 order).
void patch_gather_forward(float* out, const float* x, int64_t B, int64_t H, int64_t W, int64_t C);
// Row q (4C floats) of patch_gather_forward's output, for callers that consume it at once.
void patch_gather_row(float* out, const float* x, int64_t q, int64_t H, int64_t W, int64_t C);
// Accumulates dx (B,H,W,C) from dout (B,H/2,W/2,4C).
void patch_gather_backward(float* dx, const float* dout, int64_t B, int64_t H, int64_t W, int64_t C);

// Global average pooling: x (B,P,C) -> out (B,C).
void avgpool_forward(float* out, const float* x, int64_t B, int64_t P, int64_t C);
// Accumulates dx (B,P,C) from dout (B,C).
void avgpool_backward(float* dx, const float* dout, int64_t B, int64_t P, int64_t C);

// Layout changes: x (B,C,H,W) -> out (B,H,W,C), and back.
void nchw_to_nhwc(float* out, const float* x, int64_t B, int64_t C, int64_t H, int64_t W);
void nhwc_to_nchw(float* out, const float* x, int64_t B, int64_t H, int64_t W, int64_t C);

}  // namespace mm
