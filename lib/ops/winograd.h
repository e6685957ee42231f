#pragma once
// Winograd convolution F(m x m, 3x3) for 3x3, stride-1, pad-1 dense convs: float32
// forward (inference), CPU, channels-last as conv2d (ops/conv2d.h).
//
// The output is cut into m x m tiles; tile t reads an a x a input patch d (a = m+2,
// zero outside the image) and
//   y_t = A^T [ sum_ci (G g_{co,ci} G^T) .* (B^T d_{t,ci} B) ] A
// so the a*a elementwise products summed over ci are a*a GEMMs
//   M_k (tiles,Cout) = V_k (tiles,Cin) @ U_k^T,  U_k (Cout,Cin),  k = 0..a*a-1,
// with U = G g G^T (the weight transform) and V = B^T d B (the input transform).
// U depends on the weights only: a model whose weights stay put transforms them once
// (winograd_transform_weights, WinogradWeightCache) instead of on every call, which at
// small batches (one image per thread in the sub-batch mode) cost as much as the GEMMs.
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
#include <memory>
#include <mutex>
#include <vector>

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
// weights_transformed: the caller has the transformed weights (WinogradWeightCache), so
// there is no per-call transform to amortise and F(2x2) pays from fewer tiles.
int winograd_tile_for(const Conv2dShape& s, bool weights_transformed = false);

// Floats of scratch conv3x3_winograd_forward needs for s with tile size m (any thread count).
int64_t winograd_workspace_floats(const Conv2dShape& s, int m);

// Floats of the transformed weights for s's channels and tile size m:
// U (a*a matrices (Cout,Cin), a = m+2, padded apart) then bias' (Cout).
int64_t winograd_weight_floats(const Conv2dShape& s, int m);

// uw:     winograd_weight_floats(s, m) floats, overwritten:
//         U_k = scale .* (G g G^T)_k and bias' = scale*bias + shift (the epilogue's scale and
//         shift folded in; its relu is left to the forward)
// weight: (Cout,Cin,3,3)
// bias:   (Cout) or nullptr
void winograd_transform_weights(float* uw, const float* weight, const float* bias, const Conv2dShape& s, int m,
                                const ConvEpilogue& epilogue = {});

// out:       (B,H,W,Cout)  overwritten, [relu](conv + bias')
// x:         (B,H,W,Cin)
// uw:        winograd_transform_weights(uw, ..., s', m, ...) for any s' with s's Cin and Cout
// workspace: winograd_workspace_floats(s, m) floats (this path uses the part after
//            winograd_weight_floats(s, m) only), or nullptr to allocate one
void conv3x3_winograd_forward_transformed(float* out, const float* x, const float* uw, const Conv2dShape& s, int m,
                                          float* workspace, bool relu);

// The per-call path: transforms the weights into the workspace, then as above.
// out:       (B,H,W,Cout)  overwritten, epilogue applied
// x:         (B,H,W,Cin)
// weight:    (Cout,Cin,3,3)
// bias:      (Cout) or nullptr
// m:         2 or 4
// workspace: winograd_workspace_floats(s, m) floats, or nullptr to allocate one
void conv3x3_winograd_forward(float* out, const float* x, const float* weight, const float* bias,
                              const Conv2dShape& s, int m, float* workspace, const ConvEpilogue& epilogue = {});

// One conv's transformed weights (and its epilogue's scale/shift), per tile size, built by
// the first get() for that size and kept until clear(): a model holds one per conv for as
// long as its parameters do not change. get() may be called by several threads at once
// (the sub-batch workers): one builds, the others wait for it (std::call_once).
class WinogradWeightCache {
 public:
  WinogradWeightCache();
  // uw for (weight, bias, epilogue) at s's channels and tile size m (2 or 4). The first call
  // per m transforms; later ones must pass the same weight pointer and channel counts.
  const float* get(const float* weight, const float* bias, const Conv2dShape& s, int m,
                   const ConvEpilogue& epilogue);
  // Forgets every transform (the weights changed). Not while a get() runs.
  void clear();

 private:
  struct Entry {
    std::once_flag built;
    std::vector<float> uw;
    const float* weight = nullptr;
    int64_t Cin = 0, Cout = 0;
  };
  std::unique_ptr<Entry> entries_[2];  // tile size 2, 4
};

}  // namespace mm
