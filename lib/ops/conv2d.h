#pragma once
// Dense 2-D convolution on channels-last activations, CPU.
//
//   out[b,oh,ow,co] = bias[co] + sum_{ci,kh,kw} weight[co,ci,kh,kw] * x[b, oh*s-p+kh, ow*s-p+kw, ci]
//
// x is (B,H,W,Cin) and out is (B,OH,OW,Cout), channels innermost; the weight keeps
// PyTorch's layout (Cout,Cin,KH,KW); positions outside the image read as zero.
// Used by MedMamba for the 4x4 stride-4 patch embedding, 3x3 pad 1 and 1x1 convs.
//
// Method: im2col + sgemm. Output pixels are processed in chunks of whole output
// rows; for each chunk the receptive fields are unrolled into a matrix
//   col (P_chunk, K),  K = Cin*KH*KW,  columns ordered (kh,kw,ci),
// so each kernel row of a receptive field is one contiguous copy from the
// channels-last input (and col2im one contiguous add). The weight is permuted
// to the same (Cout,KH,KW,Cin) order into the workspace on every call (Cout*K
// floats; cheap next to the GEMM), and
//   out_chunk (P_chunk,Cout) = col @ weight_perm^T.
// A 1x1, stride 1, pad 0 conv skips im2col: x itself is the (P,Cin) matrix.
// sgemm is never called inside an OpenMP region; im2col / col2im / bias loops are
// OpenMP-parallel.
//
// Conventions: forward overwrites `out`; backward ACCUMULATES (+=) into dx,
// dweight and dbias (the caller zeroes them); any gradient pointer may be
// nullptr to skip that gradient (and the work only it needs).
#include <cstdint>
#include <vector>

#include "ops/winograd.h"

namespace mm {

struct Conv2dShape {
  int64_t B = 1, H = 1, W = 1;   // input batch and spatial size
  int64_t Cin = 1, Cout = 1;     // channels
  int64_t KH = 1, KW = 1;        // kernel size
  int64_t stride = 1, pad = 0;   // same in both spatial dimensions; zero padding

  int64_t out_h() const { return (H + 2 * pad - KH) / stride + 1; }
  int64_t out_w() const { return (W + 2 * pad - KW) / stride + 1; }
  int64_t col_k() const { return Cin * KH * KW; }  // reduction length of the GEMM
  // True when x can be used directly as the GEMM operand (no im2col, no workspace).
  bool is_pointwise() const { return KH == 1 && KW == 1 && stride == 1 && pad == 0; }
  int64_t flops() const { return 2 * B * out_h() * out_w() * Cout * col_k(); }  // forward
};

// Size in floats of the scratch buffer conv2d_forward / conv2d_backward need for
// this shape (one buffer serves both, and conv2d_forward_eval; 0 for pointwise convs).
// It holds the im2col matrix of one chunk of output rows (about 2 MiB, whatever B*OH
// is) plus two weight-sized buffers (permuted weight and weight gradient), or the
// Winograd scratch where conv2d_forward_eval takes that path, so a model can
// allocate the maximum over its convs once. Contents need not persist between calls.
int64_t conv2d_workspace_floats(const Conv2dShape& s);

// out:       (B,OH,OW,Cout)   overwritten
// x:         (B,H,W,Cin)
// weight:    (Cout,Cin,KH,KW)
// bias:      (Cout) or nullptr for no bias
// workspace: conv2d_workspace_floats(s) floats, or nullptr to allocate one
//            internally (convenient for tests; the model should pass its own)
void conv2d_forward(float* out, const float* x, const float* weight, const float* bias,
                    const Conv2dShape& s, float* workspace);

// Inference forward with an epilogue: out = [relu](scale * (conv(x) + bias) + shift).
// 3x3 stride-1 pad-1 convs go through Winograd (ops/winograd.h) where
// winograd_tile_for(s) picks a tile size (measured faster; MM_WINOGRAD=0 turns it
// off), everything else through conv2d_forward and one epilogue pass. Same arguments
// as conv2d_forward; workspace: conv2d_workspace_floats(s) floats, or nullptr.
// winograd_cache: this conv's (weight, bias and epilogue fixed) transformed Winograd
// weights, kept between calls (and the tile choice for pre-transformed weights,
// winograd_tile_for(s, true)); nullptr: transformed on every Winograd call.
void conv2d_forward_eval(float* out, const float* x, const float* weight, const float* bias,
                         const Conv2dShape& s, float* workspace, const ConvEpilogue& epilogue,
                         WinogradWeightCache* winograd_cache = nullptr);

// An eval BatchNorm (scale, shift) after a conv folded into its weights and bias, for the
// reduced-precision convs that quantise the result (gemm_bf16.h, gemm_int8.h):
//   folded_w[o,:] = weight[o,:]·scale[o],  folded_b[o] = bias[o]·scale[o] + shift[o]
// weight (Cout,K) float32; bias, scale, shift (Cout) or nullptr (0, 1, 0).
void fold_batchnorm_into_conv(std::vector<float>& folded_w, std::vector<float>& folded_b, const float* weight,
                              const float* bias, const float* scale, const float* shift, int64_t Cout, int64_t K);

// dx:        (B,H,W,Cin)        += dL/dx        (nullptr: skip)
// dweight:   (Cout,Cin,KH,KW)   += dL/dweight   (nullptr: skip)
// dbias:     (Cout)             += dL/dbias     (nullptr: skip)
// dout:      (B,OH,OW,Cout)     dL/dout
// x:         (B,H,W,Cin)        the forward input (only read when dweight is wanted)
// weight:    (Cout,Cin,KH,KW)   (only read when dx is wanted)
// workspace: conv2d_workspace_floats(s) floats, or nullptr (see conv2d_forward)
void conv2d_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, const Conv2dShape& s, float* workspace);

}  // namespace mm
