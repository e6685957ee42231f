#pragma once
// LayerNorm over the last dimension (biased variance, eps inside the sqrt, like PyTorch).
#include <cstdint>

namespace mm {

// out: (N,C); mean, rstd: (N), saved for backward (may be nullptr in inference).
void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t N, int64_t C, float eps = 1e-5f);

// Inference forms, equal to layernorm_forward bit for bit in what they share:
// out (N,C) = LayerNorm(x) with x's rows ldx floats apart (ln_1 on the right half of a block's
// input, read in place), and, when z (N,C) is set, times silu(z) (the SS2D output gate; the
// vectorised SiLU of vector_math.h, within 2e-7 relative of silu()).
void layernorm_forward_rows(float* out, const float* x, int64_t ldx, const float* z, const float* weight,
                            const float* bias, int64_t N, int64_t C, float eps = 1e-5f);

// One row's statistics as the forms above compute them: mean and 1/sqrt(variance + eps).
void layernorm_row_stats(const float* x, int64_t C, float eps, float& mean, float& rstd);

// Accumulates dx (N,C), dweight (C), dbias (C); any may be nullptr.
void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* weight, const float* mean, const float* rstd, int64_t N,
                        int64_t C);

}  // namespace mm
