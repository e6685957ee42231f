#pragma once
// Float32 training ops of the CUDA backend (CudaModel): norms, activations, layout moves,
// loss and optimiser. Each mirrors the CPU op of the same name in lib/ops (same argument
// order and shapes), so the CUDA model reads like the CPU one and every op is tested
// against its CPU twin (test/test_cuda_train_ops.cpp).
//
// Conventions, as on the CPU: every pointer is a device pointer; forward overwrites its
// outputs; backward ACCUMULATES (+=) into every gradient output, and a gradient pointer
// may be nullptr to skip it. Every launch is asynchronous on `s`. Backward ops with a
// trailing GradOut overwrite their input gradients instead when given GradOut::Overwrite.
//
// Determinism: no floating-point atomics. Reductions over rows (weight and bias
// gradients, batch statistics, norms) are written as per-block partial sums over a
// fixed partition of the rows, then summed in a fixed order, so the same inputs give
// bit-identical results on the same GPU, whatever the timing.
#include <cstdint>

#include "cuda_ops.h"  // Stream

namespace mm::cuda {

// ---------------------------------------------------------------------------
// LayerNorm over the last dimension (eps 1e-5, biased variance).
//
// The norms' trailing ld: x's rows (and dx's, in backward) are ld floats apart, so that a
// norm reads or writes one half of a wider row in place (a block's channel halves); 0 means
// C. Every other buffer is packed, rows C apart.

// out (N,C); mean, rstd (N) saved for backward (may be nullptr).
void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t N, int64_t C, Stream s, int64_t ld = 0);
// out (N,C) rounded to bf16 (nearest even; the bits of __nv_bfloat16), for a LayerNorm whose
// output feeds only GemmCompute::BF16 GEMMs, which would round it so: the bits to_bf16 makes
// of layernorm_forward's out.
void layernorm_forward_bf16(uint16_t* out, float* mean, float* rstd, const float* x, const float* weight,
                            const float* bias, int64_t N, int64_t C, Stream s, int64_t ld = 0);
// The SS2D branch's output norm and gate in one pass: gated (N,C) = out ⊙ SiLU(z), the bits of
// layernorm_forward then gate_forward; out, the LayerNorm alone, may be nullptr.
void layernorm_gate_forward(float* out, float* gated, float* mean, float* rstd, const float* x, const float* z,
                            const float* weight, const float* bias, int64_t N, int64_t C, Stream s);
// The same with gated rounded to bf16 (nearest even), for the bf16 GEMMs it feeds: the bits
// to_bf16 makes of layernorm_gate_forward's gated.
void layernorm_gate_forward_bf16(float* out, uint16_t* gated, float* mean, float* rstd, const float* x,
                                 const float* z, const float* weight, const float* bias, int64_t N, int64_t C,
                                 Stream s);
// dx (N,C) +=, dweight (C) +=, dbias (C) +=; any may be nullptr.
void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C,
                        Stream s, GradOut out = GradOut::Accumulate, int64_t ld = 0);
// The SS2D gate's backward folded into the output norm's (the pair layernorm_gate_forward ran):
// the bits of gate_backward(dyn, dz, dg, y, z) then layernorm_backward(dx, …, dyn, x, …), y the
// LayerNorm's output, recomputed here from x, mean, rstd, weight and bias. dz (N,C) is
// overwritten; dx as out says; every pointer but dweight and dbias is needed.
void layernorm_gate_backward(float* dx, float* dweight, float* dbias, float* dz, const float* dg, const float* z,
                             const float* x, const float* weight, const float* bias, const float* mean,
                             const float* rstd, int64_t N, int64_t C, Stream s, GradOut out = GradOut::Accumulate);
// The same with dz rounded to bf16 (the bits of __nv_bfloat16), for the bf16 GEMMs that alone
// read it: the bits those GEMMs would round it to.
void layernorm_gate_backward_bf16(float* dx, float* dweight, float* dbias, uint16_t* dz, const float* dg,
                                  const float* z, const float* x, const float* weight, const float* bias,
                                  const float* mean, const float* rstd, int64_t N, int64_t C, Stream s,
                                  GradOut out = GradOut::Accumulate);

// ---------------------------------------------------------------------------
// BatchNorm2d on channels-last rows (N,C), N = B·H·W (eps 1e-5, momentum 0.1), as lib/ops/batchnorm.h.
// ld as for the LayerNorms.

// mean, rstd (C) overwritten (saved for backward); running_mean/var (C) updated in place
// (running_var with the unbiased variance), both nullptr to skip.
// relu: out = max(0, BatchNorm(x)) in the same pass (the bits of relu_forward after it); the
// other forwards take it too.
void batchnorm_forward_train(float* out, float* mean, float* rstd, float* running_mean, float* running_var,
                             const float* x, const float* weight, const float* bias, int64_t N, int64_t C,
                             Stream s, bool relu = false, int64_t ld = 0);
// The train-mode output again, from the mean and rstd batchnorm_forward_train saved (no
// running-statistic update): the same bits as its `out`, for backward passes that recompute
// an activation instead of keeping it.
void batchnorm_forward_saved(float* out, const float* x, const float* mean, const float* rstd, const float* weight,
                             const float* bias, int64_t N, int64_t C, Stream s, bool relu = false, int64_t ld = 0);
void batchnorm_forward_eval(float* out, const float* x, const float* running_mean, const float* running_var,
                            const float* weight, const float* bias, int64_t N, int64_t C, Stream s,
                            bool relu = false, int64_t ld = 0);
// The same three without writing out: the per-channel map out = x·scale + shift into scale and
// shift (C each), for a consumer that applies it as it reads x (a conv's ConvInputMap). The
// train one saves the statistics and updates the running ones as batchnorm_forward_train does.
void batchnorm_train_map(float* scale, float* shift, float* mean, float* rstd, float* running_mean,
                         float* running_var, const float* x, const float* weight, const float* bias, int64_t N,
                         int64_t C, Stream s, int64_t ld = 0);
void batchnorm_saved_map(float* scale, float* shift, const float* mean, const float* rstd, const float* weight,
                         const float* bias, int64_t C, Stream s);
void batchnorm_eval_map(float* scale, float* shift, const float* running_mean, const float* running_var,
                        const float* weight, const float* bias, int64_t C, Stream s);
// out (N,C) = max(0, x·scale + shift) with relu, else x·scale + shift, from one of those maps,
// rounded to bf16 (the bits of __nv_bfloat16): the rounding of what the matching forward writes,
// for a BatchNorm whose output only GemmCompute::BF16 GEMMs read (the 1x1 conv's input).
void batchnorm_apply_bf16(uint16_t* out, const float* x, const float* scale, const float* shift, int64_t N, int64_t C,
                          Stream s, bool relu = false, int64_t ld = 0);
// The ReLU after the BatchNorm, folded into its backward: dout passes only where the
// forward's output (from x and the statistics, so this needs the forward's bias) was
// positive, the bits of relu_backward on that output before the plain backward.
struct BatchNormRelu {
  bool on = false;
  const float* bias = nullptr;
};
// dx_bf16 (N,C) packed, or nullptr: dx's new values rounded to bf16 there too (the bits of
// __nv_bfloat16), for a conv backward's GEMMs that read dx as their dout (conv2d_backward's
// dout_bf16).
void batchnorm_backward_train(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                              const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C,
                              Stream s, GradOut out = GradOut::Accumulate, const BatchNormRelu& relu = {},
                              int64_t ld = 0, uint16_t* dx_bf16 = nullptr);
void batchnorm_backward_eval(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                             const float* running_mean, const float* running_var, const float* weight, int64_t N,
                             int64_t C, Stream s, GradOut out = GradOut::Accumulate, const BatchNormRelu& relu = {},
                             int64_t ld = 0, uint16_t* dx_bf16 = nullptr);

// ---------------------------------------------------------------------------
// Activations and elementwise steps on n floats. out may alias x in forward.

void relu_forward(float* out, const float* x, int64_t n, Stream s);
void silu_forward(float* out, const float* x, int64_t n, Stream s);
// dx += dout·relu'(x), dx += dout·silu'(x)
void relu_backward(float* dx, const float* dout, const float* x, int64_t n, Stream s,
                   GradOut out = GradOut::Accumulate);
void silu_backward(float* dx, const float* dout, const float* x, int64_t n, Stream s,
                   GradOut out = GradOut::Accumulate);

// SS2D gate: g (n) = yn ⊙ SiLU(z).  Backward: dyn += dg ⊙ SiLU(z); dz += dg ⊙ yn ⊙ SiLU'(z).
void gate_forward(float* g, const float* yn, const float* z, int64_t n, Stream s);
void gate_backward(float* dyn, float* dz, const float* dg, const float* yn, const float* z, int64_t n, Stream s,
                   GradOut out = GradOut::Accumulate);

// out (n) += x (n)
void add_inplace(float* out, const float* x, int64_t n, Stream s);

// Drop path: x (B, per) row b scaled by scale[b] (scale: (B) device floats), in place.
// The backward is the same call on the gradient.
void scale_rows(float* x, const float* scale, int64_t B, int64_t per, Stream s);

// ---------------------------------------------------------------------------
// Layout moves, as lib/ops/layout.h. Backward accumulates.

void split_halves_forward(float* left, float* right, const float* x, int64_t P, int64_t c, Stream s);
// Overwrite needs both dleft and dright.
void split_halves_backward(float* dx, const float* dleft, const float* dright, int64_t P, int64_t c, Stream s,
                           GradOut out = GradOut::Accumulate);
// A block's end fused into its channel shuffle, each part optional: the residual x added to the
// shuffled output (forward), or dout copied into its gradient dx (backward, overwriting it);
// and drop path's factor sb_scale[b] (B device floats) on sb's rows of image b, per_image
// elements (H·W·c) each, in both. The same bits as scale_rows, concat_shuffle and add_inplace
// (or a copy) in turn. And the ReLU on l, the convolution branch's last step: forward takes
// max(0, l) (relu_l), backward passes dl only where l_pre, l before that ReLU, is positive:
// the bits of relu_forward before the shuffle and relu_backward after it. dsb_bf16 (backward,
// with dsb nullptr and GradOut::Overwrite): dsb written rounded to bf16 (the bits of
// __nv_bfloat16) there, for the bf16 GEMMs that alone read it (out_proj's backward).
struct ShuffleResidual {
  const float* x = nullptr;
  float* dx = nullptr;
  const float* sb_scale = nullptr;
  int64_t per_image = 0;
  bool relu_l = false;
  const float* l_pre = nullptr;
  uint16_t* dsb_bf16 = nullptr;
};
// out (P,2c) = shuffle(l, sb): out[p, 2m] = l[p, m], out[p, 2m+1] = sb[p, m].
void concat_shuffle_forward(float* out, const float* l, const float* sb, int64_t P, int64_t c, Stream s,
                            const ShuffleResidual& r = {});
// dl += dout's even channels, dsb += its odd ones (times sb_scale with r).
void concat_shuffle_backward(float* dl, float* dsb, const float* dout, int64_t P, int64_t c, Stream s,
                             GradOut out = GradOut::Accumulate, const ShuffleResidual& r = {});
void patch_gather_forward(float* out, const float* x, int64_t B, int64_t H, int64_t W, int64_t C, Stream s);
void patch_gather_backward(float* dx, const float* dout, int64_t B, int64_t H, int64_t W, int64_t C, Stream s);
void avgpool_forward(float* out, const float* x, int64_t B, int64_t P, int64_t C, Stream s);
void avgpool_backward(float* dx, const float* dout, int64_t B, int64_t P, int64_t C, Stream s);
void nchw_to_nhwc(float* out, const float* x, int64_t B, int64_t C, int64_t H, int64_t W, Stream s);
void nhwc_to_nchw(float* out, const float* x, int64_t B, int64_t H, int64_t W, int64_t C, Stream s);

// ---------------------------------------------------------------------------
// Softmax cross-entropy, as lib/ops/cross_entropy.h (class weights, label smoothing,
// weighted mean). logits (B,K), labels (B) int64, class_weights (K) or nullptr.
// probs (B,K) overwritten; loss: one device float, overwritten.
void cross_entropy_forward(float* loss, float* probs, const float* logits, const int64_t* labels,
                           const float* class_weights, float label_smoothing, int64_t B, int64_t K, Stream s);
// dlogits (B,K) += dloss · dloss/dlogits.
void cross_entropy_backward(float* dlogits, const float* probs, const int64_t* labels, const float* class_weights,
                            float label_smoothing, float dloss, int64_t B, int64_t K, Stream s);

// ---------------------------------------------------------------------------
// Optimiser over the flat buffers (n floats). `role` (n bytes) says per float:
// 0 = trained with weight decay, 1 = trained without, 2 = buffer (never touched, not in norms).

// Global L2 norm over the trained floats of g, into *norm (one device float), in float64
// partials summed in a fixed order. Returns nothing: read *norm after a sync.
void grad_norm(float* norm, const float* g, const uint8_t* role, int64_t n, Stream s);
// g *= factor for trained floats, where factor = max_norm / (*norm + 1e-6) when *norm > max_norm,
// else 1 (read on the device: no host round trip). max_norm <= 0: nothing.
void clip_grads(float* g, const uint8_t* role, int64_t n, const float* norm, float max_norm, Stream s);
// torch.optim.AdamW, the float operations of lib/train/optimizer.cpp in the same order:
//   p *= 1 - lr*wd (role 0 only);  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g²
//   p -= lr/(1-b1^t) · m / (sqrt(v)/sqrt(1-b2^t) + eps)
// t is the 1-based step count.
struct AdamWStep {
  float lr = 0, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.05f;
  int64_t t = 1;
};
void adamw_step(float* p, float* m, float* v, const float* g, const uint8_t* role, int64_t n, const AdamWStep& a,
                Stream s);

// *flag (one device int) = 1 if any of the n floats is NaN or Inf, else left as is.
void flag_nonfinite(int* flag, const float* x, int64_t n, Stream s);

}  // namespace mm::cuda
