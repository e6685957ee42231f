#pragma once
// One SS_Conv_SSM block of MedMamba, forward and backward, on channels-last (B,H,W,C).
//
//   left, right = x[..., :c], x[..., c:]                       c = C/2, D = C
//   s = drop_path(SS2D(ln_1(right)))                           (B,H,W,c)
//   l = ReLU(conv1x1(ReLU(BN(conv3x3(ReLU(BN(conv3x3(BN(left)))))))))
//   out = channel_shuffle(concat(l, s)) + x
#include <string>

#include "core/tensor.h"
#include "model/params.h"
#include "ops/batchnorm.h"  // BatchNormSync

namespace mm {

class WinogradWeightCache;

struct BatchNormWeights {
  float *weight = nullptr, *bias = nullptr, *running_mean = nullptr, *running_var = nullptr;
};

// Pointers into a parameter buffer (or its gradient twin) for one block.
struct BlockWeights {
  float *ln1_w, *ln1_b;
  float *x_proj, *dt_projs_w, *dt_projs_b, *A_logs, *Ds;  // SS2D scan parameters
  float *in_proj, *dwconv_w, *dwconv_b, *out_norm_w, *out_norm_b, *out_proj;
  BatchNormWeights bn0, bn2, bn5;
  float *conv1_w, *conv1_b, *conv4_w, *conv4_b, *conv7_w, *conv7_b;
};

// prefix: "layers.{i}.blocks.{j}."; base: the parameter buffer or the gradient buffer.
BlockWeights block_weights(float* base, const ParamTable& table, const std::string& prefix);

struct BlockDims {
  int64_t B, H, W, C, N, R;  // batch, spatial, channels, d_state, dt_rank
  int64_t P() const { return B * H * W; }
  int64_t c() const { return C / 2; }
};

// Activations a block keeps for its backward pass. In inference one set is
// reused by all blocks of a stage.
struct BlockActs {
  void ensure(const BlockDims& d, bool keep);  // (re)allocates when the dims grow or keep is newly asked
  Tensor left, right, ln1, ln1_mean, ln1_rstd;          // (P,c), (P)
  Tensor xin, z, xconv, u, y, yn, on_mean, on_rstd, g;  // (P,D), (P)
  Tensor s;                                             // (P,c) SS2D branch output
  Tensor a0, a1, a2, a3, a4, a5, a6, a7, l;             // conv branch, (P,c)
  Tensor bn_mean, bn_rstd;                              // (3,c): saved batch statistics
  Tensor scan_states;                                   // scan checkpoints saved for backward (keep only)
  int64_t capacity = -1;
  bool kept = false;
};

struct BlockContext {
  bool train = false;
  bool keep = false;                  // activations are kept for block_backward (train or saliency)
  const float* drop_scale = nullptr;  // (B): per-sample drop-path factor (0 or 1/keep), or nullptr
  float* conv_workspace = nullptr;    // conv2d_workspace_floats() of the 3x3 conv
  // Eval forward: the two 3x3 convs' transformed Winograd weights (conv1's, conv4's), kept
  // by the model while its parameters stay; nullptr: transformed on every call.
  WinogradWeightCache* conv3x3_caches = nullptr;
  // Temporaries that nothing outlives a block's forward or backward, so one buffer of each
  // serves every block of the model: block_scratch_floats() (backward's five (P,D) regions)
  // and block_scan_workspace_floats() (the selective scan's).
  float* scratch = nullptr;
  float* scan_workspace = nullptr;
  const BatchNormSync* batchnorm_sync = nullptr;  // train mode: statistics over every process
};

int64_t block_scratch_floats(const BlockDims& d);
// keep: activations kept for backward, whose scan workspace is larger than forward's.
int64_t block_scan_workspace_floats(const BlockDims& d, bool keep);

// out, x: (B,H,W,C). out must not alias x.
void block_forward(float* out, const float* x, const BlockWeights& w, BlockActs& a,
                   const BlockDims& d, const BlockContext& ctx);

// Accumulates dx (B,H,W,C) and every gradient in g. Uses a's saved activations;
// ctx.scratch and ctx.scan_workspace are clobbered.
void block_backward(float* dx, const float* dout, const BlockWeights& w, const BlockWeights& g,
                    BlockActs& a, const BlockDims& d, const BlockContext& ctx);

}  // namespace mm
