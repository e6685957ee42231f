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

// Device activations a block keeps for backward. Fewer than the CPU BlockActs: backward
// recomputes every cheap one (the channel halves, LayerNorm and BatchNorm outputs from their
// saved statistics, in_proj's two halves, the depthwise conv, SiLU, the gate, the 1x1 conv)
// into the shared scratch, and keeps only the 3x3 convolutions' and the scan's outputs, and
// the statistics.
struct BlockActsCuda {
  void ensure(const BlockDims& d, bool keep);
  static int64_t floats(const BlockDims& d, bool keep);  // what ensure allocates
  Tensor a1, a4;                                        // conv branch: conv1, conv4 outputs (P,c)
  Tensor y;                                             // scan output (P,D)
  Tensor ln1_mean, ln1_rstd, on_mean, on_rstd;          // (P)
  Tensor bn_mean, bn_rstd;                              // (3,c)
  Tensor scan_states;                                   // scan checkpoints (keep only)
  int64_t capacity = -1;
  bool kept = false;
};

struct BlockContextCuda {
  bool train = false;
  bool keep = false;
  bool bf16 = false;  // the model's GEMMs run in bf16: the scan keeps its smaller bf16 workspace layout
  const float* drop_scale = nullptr;  // (B) device floats, or nullptr
  float* conv_workspace = nullptr;    // cuda::conv2d_workspace_floats of the block's 3x3 conv
  float* scan_workspace = nullptr;    // cuda::scan_train_workspace_floats of the block's scan
  float* scratch = nullptr;           // block_cuda_scratch_floats: every temporary and recomputed activation
  CUstream_st* stream = nullptr;
};

// Workspace floats a block of these dims needs (the maxima callers allocate once).
int64_t block_cuda_conv_workspace_floats(const BlockDims& d);
int64_t block_cuda_scan_workspace_floats(const BlockDims& d, bool bf16);
// (P,6.5D): nothing in it outlives a block's forward or backward, so every block shares one.
int64_t block_cuda_scratch_floats(const BlockDims& d);

// out, x: (B,H,W,C) device; out must not alias x. w: pointers into the device parameters.
void block_forward_cuda(float* out, const float* x, const BlockWeights& w, BlockActsCuda& a, const BlockDims& d,
                        const BlockContextCuda& ctx);
// Writes dx (B,H,W,C) (its old contents are ignored) and accumulates the gradients g
// (pointers into the device gradient buffer).
// x: the block's input that forward saw, still unchanged.
void block_backward_cuda(float* dx, const float* dout, const float* x, const BlockWeights& w, const BlockWeights& g,
                         BlockActsCuda& a, const BlockDims& d, const BlockContextCuda& ctx);

}  // namespace mm
