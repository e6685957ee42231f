#pragma once
// BatchNorm2d on channels-last activations, CPU. The op normalises each channel
// over batch and space, so (B,H,W,C) is handled as rows: x viewed as (N,C) with
// N = B*H*W. Matches torch.nn.BatchNorm2d (eps 1e-5, momentum 0.1 in MedMamba):
//
//   training: mean, var = batch mean and BIASED variance over the N rows
//             out = (x - mean) / sqrt(var + eps) * weight + bias
//             running_mean = (1-momentum)*running_mean + momentum*mean
//             running_var  = (1-momentum)*running_var  + momentum*var*N/(N-1)   (UNBIASED)
//   eval:     out = (x - running_mean) / sqrt(running_var + eps) * weight + bias
//
// weight / bias may be nullptr (affine=False: weight 1, bias 0).
// Forward overwrites its outputs; backward ACCUMULATES (+=) into dx, dweight,
// dbias, any of which may be nullptr to skip it.
#include <cstdint>

#include <functional>

namespace mm {

// Synchronised BatchNorm (data-parallel training, mm-train --sync-bn): replaces each of the n
// doubles by its sum over every process, so the statistics are those of the whole global
// batch. Every process must call it in the same order. nullptr: this process's batch alone.
using BatchNormSync = std::function<void(double* values, int64_t n)>;

// out:          (N,C) = (B,H,W,C)   overwritten
// mean, rstd:   (C)   overwritten: batch mean and 1/sqrt(var+eps), saved for backward
// running_mean, running_var: (C) updated in place; both nullptr to skip the update
// x:            (N,C)
// weight, bias: (C) or nullptr
// Requires N > 1 (like PyTorch in training).
// sync: mean and variance over every process's rows (N may then be 0 or 1 locally).
void batchnorm_forward_train(float* out, float* mean, float* rstd, float* running_mean,
                             float* running_var, const float* x, const float* weight,
                             const float* bias, int64_t N, int64_t C, float eps = 1e-5f,
                             float momentum = 0.1f, const BatchNormSync* sync = nullptr);

// out:          (N,C)   overwritten
// x:            (N,C)
// running_mean, running_var: (C)
// weight, bias: (C) or nullptr
void batchnorm_forward_eval(float* out, const float* x, const float* running_mean,
                            const float* running_var, const float* weight, const float* bias,
                            int64_t N, int64_t C, float eps = 1e-5f);

// The eval-mode BatchNorm as a per-channel affine map, out = x·scale + shift, with the
// arithmetic batchnorm_forward_eval uses: scale = weight / sqrt(running_var + eps) (the
// square root in double), shift = bias - running_mean·scale. scale, shift: (C) overwritten.
void batchnorm_eval_affine(float* scale, float* shift, const float* running_mean, const float* running_var,
                           const float* weight, const float* bias, int64_t C, float eps = 1e-5f);

// Backward of batchnorm_forward_train (gradient flows through the batch statistics).
// dx:            (N,C)  +=   dweight, dbias: (C) +=   (each may be nullptr)
// dout, x:       (N,C)
// weight:        (C) or nullptr
// mean, rstd:    (C) as saved by batchnorm_forward_train
// sync: dx through the global statistics (the same sync as forward's); dweight and dbias
// stay this process's share (the data-parallel gradient sum adds the shares).
void batchnorm_backward_train(float* dx, float* dweight, float* dbias, const float* dout,
                              const float* x, const float* weight, const float* mean,
                              const float* rstd, int64_t N, int64_t C,
                              const BatchNormSync* sync = nullptr);

// Backward of batchnorm_forward_eval (statistics are constants).
// dx:            (N,C)  +=   dweight, dbias: (C) +=   (each may be nullptr)
// dout, x:       (N,C)
// running_mean, running_var: (C)
// weight:        (C) or nullptr
void batchnorm_backward_eval(float* dx, float* dweight, float* dbias, const float* dout,
                             const float* x, const float* running_mean, const float* running_var,
                             const float* weight, int64_t N, int64_t C, float eps = 1e-5f);

// Inference helper: folds an eval-mode BatchNorm that FOLLOWS a conv (conv -> BN)
// into that conv, in place, so the pair becomes one conv:
//   s = bn_weight / sqrt(running_var + eps)
//   conv_weight[co, :] *= s[co];  conv_bias[co] = (conv_bias[co] - running_mean[co]) * s[co] + bn_bias[co]
// conv_weight: (Cout, fan_in) with fan_in = Cin*KH*KW; conv_bias: (Cout), required
// (pass zeros for a conv without bias); bn_weight / bn_bias may be nullptr.
// A BN BEFORE a zero-padded conv (MedMamba's conv33conv33conv11.0) cannot be
// folded exactly: the padding would see shifted values at the borders.
void batchnorm_fold_into_conv(float* conv_weight, float* conv_bias, int64_t Cout, int64_t fan_in,
                              const float* bn_weight, const float* bn_bias,
                              const float* running_mean, const float* running_var,
                              float eps = 1e-5f);

}  // namespace mm
