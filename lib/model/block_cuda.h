#pragma once
// One SS_Conv_SSM block on the CUDA training backend (MedMambaCuda), forward and
// backward, float32, channels-last (B,H,W,C). The same sequence of ops as the CPU
// block (model/block.h, which documents the math), each op replaced by its CUDA twin
// from kernels/cuda_train_*.h; the op tests hold each pair equal.
//
// Only compiled with CUDA (MM_HAVE_CUDA).
#include "core/tensor.h"
#include "model/block.h"  // BlockWeights, BlockDims

struct CUstream_st;

namespace mm {

// Device activations a block keeps for backward (the CPU BlockActs' twin).
struct BlockActsCuda {
  void ensure(const BlockDims& d, bool keep);
  static int64_t floats(const BlockDims& d, bool keep);  // what ensure allocates
  Tensor left, right, ln1, ln1_mean, ln1_rstd;          // (P,c), (P)
  Tensor xin, z, xconv, u, y, yn, on_mean, on_rstd, g;  // (P,D), (P)
  Tensor s;                                             // (P,c)
  Tensor a0, a1, a2, a3, a4, a5, a6, a7, l;             // conv branch, (P,c)
  Tensor bn_mean, bn_rstd;                              // (3,c)
  Tensor scan_states;                                   // scan checkpoints (keep only)
  int64_t capacity = -1;
  bool kept = false;
};

struct BlockContextCuda {
  bool train = false;
  bool keep = false;
  const float* drop_scale = nullptr;  // (B) device floats, or nullptr
  float* conv_workspace = nullptr;    // cuda::conv2d_workspace_floats of the block's 3x3 conv
  float* scan_workspace = nullptr;    // cuda::scan_train_workspace_floats of the block's scan
  float* scratch = nullptr;           // block_cuda_scratch_floats: xz in forward, temporaries in backward
  CUstream_st* stream = nullptr;
};

// Workspace floats a block of these dims needs (the maxima callers allocate once).
int64_t block_cuda_conv_workspace_floats(const BlockDims& d);
int64_t block_cuda_scan_workspace_floats(const BlockDims& d);
// (P,5D): nothing in it outlives a block's forward or backward, so every block shares one.
int64_t block_cuda_scratch_floats(const BlockDims& d);

// out, x: (B,H,W,C) device; out must not alias x. w: pointers into the device parameters.
void block_forward_cuda(float* out, const float* x, const BlockWeights& w, BlockActsCuda& a, const BlockDims& d,
                        const BlockContextCuda& ctx);
// Accumulates dx (B,H,W,C) and the gradients g (pointers into the device gradient buffer).
void block_backward_cuda(float* dx, const float* dout, const BlockWeights& w, const BlockWeights& g,
                         BlockActsCuda& a, const BlockDims& d, const BlockContextCuda& ctx);

}  // namespace mm
