#pragma once
// Winograd convolution F(m x m, 3x3) for 3x3, stride-1, pad-1 dense convs: float32
// forward (inference), CPU, channels-last as conv2d (ops/conv2d.h).
//
// The output is cut into m x m tiles; tile t reads an a x a input patch d (a = m+2,
// zero outside the image) and
//   y_t = A^T [ sum_ci (G g_{co,ci} G^T) .* (B^T d_{t,ci} B) ] A
// so the a*a elementwise products summed over ci are a*a GEMMs
//   M_k (tiles,Cout) = V_k (tiles,Cin) @ U_k^T,  U_k (Cout,Cin),  k = 0..a*a-1,
// with U = G g G^T (the weight transform, per call) and V = B^T d B (the input transform).
// The 9 multiplies of an output pixel per (ci,co) become a*a/(m*m): 4 for m = 2
// (2.25x fewer), 2.25 for m = 4 (4x fewer), at the price of the transforms' memory
// traffic and, for m = 4, a few times the rounding error of im2col (the transforms'
// coefficients up to 8 and 1/24; test_ops_winograd.cpp states the bounds).
//
// Each thread takes chunks of tiles and runs input transform -> a*a single-threaded
// sgemm calls -> output transform on its own chunk, so a chunk's V and M stay in that
// core's cache (sgemm is called inside the OpenMP region; oneDNN and OpenMP-built
// OpenBLAS then run it on the calling thread).
#include <cstdint>

namespace mm {

struct Conv2dShape;

// What follows the conv, applied while the output tile is in registers:
//   out = [relu]( scale * (conv + bias) + shift )
// (an eval BatchNorm and ReLU after the conv); nullptr scale/shift: 1 and 0.
struct ConvEpilogue {
  const float* scale = nullptr;  // (Cout)
  const float* shift = nullptr;  // (Cout)
  bool relu = false;
};

// 3x3 kernel, stride 1, pad 1: the shapes the Winograd kernels compute.
bool winograd_shape_ok(const Conv2dShape& s);

// The tile size m (2 or 4) conv2d_forward_eval uses for s, or 0 for im2col: 0 when
// !winograd_shape_ok(s), when MM_WINOGRAD=0 in the environment, or where im2col measured
// faster. MM_WINOGRAD=2 or 4 forces that tile size on every supported shape.
int winograd_tile_for(const Conv2dShape& s);

// Floats of scratch conv3x3_winograd_forward needs for s with tile size m (any thread count).
int64_t winograd_workspace_floats(const Conv2dShape& s, int m);

// out:       (B,H,W,Cout)  overwritten, epilogue applied
// x:         (B,H,W,Cin)
// weight:    (Cout,Cin,3,3)
// bias:      (Cout) or nullptr
// m:         2 or 4
// workspace: winograd_workspace_floats(s, m) floats, or nullptr to allocate one
void conv3x3_winograd_forward(float* out, const float* x, const float* weight, const float* bias,
                              const Conv2dShape& s, int m, float* workspace, const ConvEpilogue& epilogue = {});

}  // namespace mm
