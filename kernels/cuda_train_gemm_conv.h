#pragma once
// Float32 GEMM, Linear and convolutions of the CUDA training backend (CudaModel), forward
// and backward, mirroring lib/ops/linear.h, conv2d.h and depthwise_conv.h (same shapes,
// same argument order, PyTorch weight layouts, channels-last activations).
//
// Conventions as in cuda_train_ops.h: device pointers; forward overwrites; backward
// ACCUMULATES (+=); nullptr skips a gradient; asynchronous on `s`; no floating-point
// atomics (bit-identical results on the same GPU).
//
// GEMMs run through cuBLAS, by default in true float32 (no TF32): the gradients are
// checked against the CPU backend to 1e-4 relative. set_gemm_compute lets them use tensor
// cores instead, with the operands rounded to TF32 or bf16 and float32 accumulation; every
// buffer stays float32.
#include <cstdint>
#include <initializer_list>

#include "cuda_ops.h"  // Stream

namespace mm::cuda {

enum class GemmCompute {
  F32,   // float32 FMA units, CUBLAS_PEDANTIC_MATH
  TF32,  // tensor cores, operands rounded to TF32 (10-bit mantissa)
  BF16,  // tensor cores, operands rounded to bf16 (7-bit mantissa), as PyTorch's bf16 autocast
};
// The compute of the GEMMs this host thread issues from now on (every thread starts at F32).
void set_gemm_compute(GemmCompute c);
GemmCompute gemm_compute();

// Sets this thread's GEMM compute for a scope and restores what was there before.
class GemmComputeScope {
 public:
  explicit GemmComputeScope(GemmCompute c) : previous_(gemm_compute()) { set_gemm_compute(c); }
  ~GemmComputeScope() { set_gemm_compute(previous_); }
  GemmComputeScope(const GemmComputeScope&) = delete;
  GemmComputeScope& operator=(const GemmComputeScope&) = delete;

 private:
  GemmCompute previous_;
};

// A GEMM operand with row stride ld: float32 values, or values its producer already rounded
// to bf16 (the bits of __nv_bfloat16), which a GemmCompute::BF16 GEMM reads without making
// its own bf16 copy (im2col writes its matrix so). Other computes refuse bf16 operands.
struct GemmOperand {
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
  int64_t ld = 0;
};
inline GemmOperand f32_operand(const float* p, int64_t ld) { return {p, nullptr, ld}; }
inline GemmOperand bf16_operand(const uint16_t* p, int64_t ld) { return {nullptr, p, ld}; }

// Row-major C (M,N) = alpha · op(A) · op(B) + beta · C, op(X) = X or Xᵀ.
// A is (M,K) row-major with row stride lda (or (K,M) when trans_a); B is (K,N) with ldb
// (or (N,K) when trans_b); C has row stride ldc. beta = 1 accumulates.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, GemmOperand A, GemmOperand B,
          float beta, float* C, int64_t ldc, Stream s);
// C = op(A) · op(B) rounded to bf16 (the bits of __nv_bfloat16), under GemmCompute::BF16 only:
// for a product whose consumer sums it again in float32 (a conv's dcol, which col2im adds up
// per input pixel), at half the bytes.
void gemm_bf16_out(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B,
                   uint16_t* C, int64_t ldc, Stream s);
// src (rows, cols; row stride ld) as an operand that several GemmCompute::BF16 GEMMs read:
// rounded to bf16 once, into dst (rows·cols packed, 16-byte aligned), not once per GEMM, or
// read from its Bf16TwinScope twin.
GemmOperand bf16_operand_copy(const float* src, int64_t rows, int64_t cols, int64_t ld, uint16_t* dst, Stream s);
// The same, always rounded into dst (rows·cols packed), never the twin: for a copy that the
// caller extends in place (x_proj's weight, padded with zero rows after it).
GemmOperand bf16_packed_copy(const float* src, int64_t rows, int64_t cols, int64_t ld, uint16_t* dst, Stream s);
// Several operands of GemmCompute::BF16 GEMMs made bf16 together: each float32 one (not already
// bf16, nor inside a Bf16TwinScope) rounded into one packed copy in the GEMM operand scratch,
// valid until the next GEMM of this thread that rounds its own. A null op is skipped.
struct Bf16Request {
  GemmOperand* op;
  int64_t rows, cols;
};
void round_to_bf16(std::initializer_list<Bf16Request> ops, Stream s);
// Within the scope, on this host thread, a GemmCompute::BF16 GEMM reads a float32 operand
// that lies inside [base, base + n) from `twin` (base's bf16 rounding, the same layout) instead
// of rounding it again: the model's parameters, rounded once per forward, not once per GEMM.
// The caller keeps twin equal to base's rounding while the scope lasts. Scopes nest.
class Bf16TwinScope {
 public:
  Bf16TwinScope(const float* base, int64_t n, const uint16_t* twin);
  ~Bf16TwinScope();
  Bf16TwinScope(const Bf16TwinScope&) = delete;
  Bf16TwinScope& operator=(const Bf16TwinScope&) = delete;

 private:
  const float* base_;
  int64_t n_;
  const uint16_t* twin_;
};
inline void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, Stream s) {
  gemm(trans_a, trans_b, M, N, K, alpha, f32_operand(A, lda), f32_operand(B, ldb), beta, C, ldc, s);
}

// out (N,C) = LayerNorm(x) (rows ld floats apart, 0: C) into buf, for an output that only
// GEMMs read: under GemmCompute::BF16 written rounded to bf16 (the bits the GEMMs would round
// it to; buf then needs N·C/2 floats), so that they read it without copies of their own; else
// float32. Returns it as the GEMMs' operand (packed, ld = C). mean, rstd: as layernorm_forward.
GemmOperand layernorm_forward_operand(float* buf, float* mean, float* rstd, const float* x, const float* weight,
                                      const float* bias, int64_t N, int64_t C, Stream s, int64_t ld = 0);

// Linear, PyTorch layout: out (N,Cout) = x (N,Cin) · weightᵀ + bias; bias may be nullptr.
// weight packed (weight.ld = Cin), in float32 or (GemmCompute::BF16) already rounded to bf16.
void linear_forward(float* out, GemmOperand x, GemmOperand weight, const float* bias, int64_t N, int64_t Cin,
                    int64_t Cout, Stream s);
inline void linear_forward(float* out, GemmOperand x, const float* weight, const float* bias, int64_t N, int64_t Cin,
                           int64_t Cout, Stream s) {
  linear_forward(out, x, f32_operand(weight, Cin), bias, N, Cin, Cout, s);
}
inline void linear_forward(float* out, const float* x, const float* weight, const float* bias, int64_t N,
                           int64_t Cin, int64_t Cout, Stream s) {
  linear_forward(out, f32_operand(x, Cin), weight, bias, N, Cin, Cout, s);
}
// dx (N,Cin) +=, dweight (Cout,Cin) +=, dbias (Cout) +=; any may be nullptr.
// x may come rounded to bf16 by its producer (x.ld = Cin), as in linear_forward, and so may
// dout (dout.ld = Cout) when there is no dbias to sum from it.
void linear_backward(float* dx, float* dweight, float* dbias, GemmOperand dout, GemmOperand x, const float* weight,
                     int64_t N, int64_t Cin, int64_t Cout, Stream s, GradOut out = GradOut::Accumulate);
inline void linear_backward(float* dx, float* dweight, float* dbias, const float* dout, GemmOperand x,
                            const float* weight, int64_t N, int64_t Cin, int64_t Cout, Stream s,
                            GradOut out = GradOut::Accumulate) {
  linear_backward(dx, dweight, dbias, f32_operand(dout, Cout), x, weight, N, Cin, Cout, s, out);
}
inline void linear_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                            const float* weight, int64_t N, int64_t Cin, int64_t Cout, Stream s,
                            GradOut out = GradOut::Accumulate) {
  linear_backward(dx, dweight, dbias, f32_operand(dout, Cout), f32_operand(x, Cin), weight, N, Cin, Cout, s, out);
}

// Dense convolution on channels-last x (B,H,W,Cin) -> out (B,OH,OW,Cout), weight (Cout,Cin,KH,KW),
// zero padding; MedMamba uses 4x4 stride 4 (patch embedding), 3x3 pad 1 and 1x1.
struct ConvShape {
  int64_t B = 1, H = 1, W = 1, Cin = 1, Cout = 1, KH = 1, KW = 1, stride = 1, pad = 0;
  int64_t out_h() const { return (H + 2 * pad - KH) / stride + 1; }
  int64_t out_w() const { return (W + 2 * pad - KW) / stride + 1; }
  int64_t col_k() const { return Cin * KH * KW; }
};
// The map a conv's im2col applies to x as it reads it (not for 1x1 stride-1 convs, which read
// x directly): the conv's input is x·scale + shift per channel (a BatchNorm), then max(0, ·)
// with relu, its pixels ld floats apart (0: Cin). Its values are those of the BatchNorm's own
// output kernel (batchnorm_forward_train and the others with the same scale and shift), bit
// for bit, but are never written out.
struct ConvInputMap {
  const float *scale = nullptr, *shift = nullptr;
  bool relu = false;
  int64_t ld = 0;
};
// Floats of device workspace conv2d_forward / conv2d_backward need (the im2col matrix and
// the weight in its column order; 0 for a 1x1 stride-1 conv, which multiplies x directly).
int64_t conv2d_workspace_floats(const ConvShape& c);
// in: x's map, or nullptr for x as it is (packed).
void conv2d_forward(float* out, const float* x, const float* weight, const float* bias, const ConvShape& c,
                    float* workspace, Stream s, const ConvInputMap* in = nullptr);
// dx (B,H,W,Cin) +=, dweight +=, dbias (Cout) +=; any may be nullptr. in: as conv2d_forward's
// (for dweight; dx is the gradient of the mapped input). dout_bf16: nullptr, or dout rounded
// to bf16 by its producer (GemmCompute::BF16, not for a 1x1 conv), which the GEMMs then read
// instead of rounding dout themselves; dbias still sums the float32 dout.
void conv2d_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, const ConvShape& c, float* workspace, Stream s,
                     GradOut out = GradOut::Accumulate, const ConvInputMap* in = nullptr,
                     const uint16_t* dout_bf16 = nullptr);

// Depthwise 3x3, pad 1, stride 1, with bias: x, out (B,H,W,C); weight (C,1,3,3); bias (C) or nullptr.
// silu_out (B,H,W,C), if given: SiLU(out) from the same pass, the bits of silu_forward(out);
// silu_bf16 (B,H,W,C), if given (with silu_out): silu_out rounded to bf16 (the bits of
// __nv_bfloat16), for the GemmCompute::BF16 GEMMs that read it.
void dwconv3x3_forward(float* out, const float* x, const float* weight, const float* bias, int64_t B, int64_t H,
                       int64_t W, int64_t C, Stream s, float* silu_out = nullptr, uint16_t* silu_bf16 = nullptr);
void dwconv3x3_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* weight, int64_t B, int64_t H, int64_t W, int64_t C, Stream s,
                        GradOut out = GradOut::Accumulate);
// dwconv3x3_backward's dx alone, overwritten and rounded to bf16 (the bits of __nv_bfloat16):
// for a gradient that only GemmCompute::BF16 GEMMs read, the bits they would round it to.
void dwconv3x3_backward_dx_bf16(uint16_t* dx, const float* dout, const float* weight, int64_t B, int64_t H, int64_t W,
                                int64_t C, Stream s);

}  // namespace mm::cuda
