#pragma once
// SS2D selective scan ("ss2d_scan"), CPU, forward and backward.
//
// For each of the K = 4 scan directions over the H×W grid
//   k=0 row-major (l = h·W + w), k=1 column-major (l = w·H + h), k=2 / k=3 the reverses,
// and each position l of that sequence (u_l = u at the position's (h,w)):
//   dbl   = x_proj_weight[k] · u_l                        (R+2N): dt = dbl[:R], B = dbl[R:R+N], C = dbl[R+N:]
//   Δ_l   = softplus(dt_projs_weight[k] · dt + dt_projs_bias[k])   (D)   (PyTorch softplus, threshold 20)
//   A     = -exp(A_logs[k·D + d, :])                      (N per channel d)
//   h_l   = exp(Δ_l[d]·A) ⊙ h_{l-1} + Δ_l[d]·B_l·u_l[d]   (N-vector state per channel, h_{-1} = 0)
//   y_l[d]= C_l · h_l + Ds[k·D + d]·u_l[d]
// out(b,h,w,:) = sum over k of y at the sequence index of (h,w) in direction k.
//
// Implementation notes (details in selective_scan.cpp):
//  * x_proj for all positions and directions is one sgemm; dt_proj (rank R) is folded into the
//    recurrence, which runs over blocks of 32 channels (contiguous in channels-last u) with the
//    state vectorised over channels, using a polynomial exp (~1e-7 relative).
//  * On CPUs with AVX-512 the forward recurrence runs in selective_scan_avx512.cpp (intrinsics,
//    the same results bit for bit with the exact exp); elsewhere, and for backward, the portable
//    `omp simd` kernels of selective_scan.cpp.
//  * OpenMP over (batch, channel block); BLAS calls are made outside parallel regions.
//  * Backward recomputes what it needs from u: the state every 32 steps (one forward pass of
//    the recurrence, unless forward saved them in `states`), then each 32-step segment is
//    recomputed and back-propagated in reverse. Results do not depend on the thread count.
#include <cstdint>

namespace mm {

struct SS2DScanShape {
  int64_t B, H, W;  // batch, grid height, grid width (L = H·W)
  int64_t D;        // channels (d_inner)
  int64_t N;        // state size (d_state)
  int64_t R;        // dt rank
};

struct SS2DScanWeights {
  const float* x_proj_weight;    // (4, R+2N, D)
  const float* dt_projs_weight;  // (4, D, R)
  const float* dt_projs_bias;    // (4, D)
  const float* A_logs;           // (4·D, N)
  const float* Ds;               // (4·D)
};

// Gradient outputs, each ACCUMULATED into (+=); nullptr skips that gradient.
struct SS2DScanGrads {
  float* x_proj_weight = nullptr;    // (4, R+2N, D)
  float* dt_projs_weight = nullptr;  // (4, D, R)
  float* dt_projs_bias = nullptr;    // (4, D)
  float* A_logs = nullptr;           // (4·D, N)
  float* Ds = nullptr;               // (4·D)
};

// Scratch floats of ss2d_scan_forward / ss2d_scan_backward when the caller provides the
// workspace: (B·L)·4·(R+2N) for forward (the x_proj output), about 2-3x that for backward.
// Small per-thread buffers (a few hundred KB) are always allocated internally.
int64_t ss2d_scan_forward_workspace_floats(const SS2DScanShape& s);
int64_t ss2d_scan_backward_workspace_floats(const SS2DScanShape& s);

// Floats of the optional `states` buffer: B·4·ceil(L/32)·N·D (the scan state at every 32nd
// step of every direction; 4.8M floats for MedMamba-T stage 1 at batch 8). Passing it to
// forward and then backward saves backward one of its three recurrence passes (about 20%).
int64_t ss2d_scan_states_floats(const SS2DScanShape& s);

// Overwrites out (and states when not nullptr).
// workspace: ss2d_scan_forward_workspace_floats(s) floats, or nullptr to allocate internally
// (page faults on every call for large shapes; callers in a loop should pass one).
void ss2d_scan_forward(const SS2DScanShape& s,
                       const float* u,  // u: (B,H,W,D)
                       const SS2DScanWeights& w,
                       float* out,      // out: (B,H,W,D)
                       float* workspace = nullptr,
                       float* states = nullptr);  // states: (B,4,ceil(L/32),N,D) or nullptr

// The same recurrence from a given dbl (B·L, 4·(R+2N)) = u · x_proj_weightᵀ, for callers that
// compute that product another way (the bf16 inference path); w.x_proj_weight is not read.
// coarse_exp: cheaper exps, for inference whose other errors (bf16/int8 GEMMs) are far larger:
// exp(Δ·A) to 1.8e-4 relative at worst with AVX-512 (an error that shrinks for the slow decays
// whose states remember longest; output within 2e-4 relative L2 of the exact scan, 2e-5 with
// slow decays, test_ops_ss2d_scan.cpp), ~3e-6 in the portable kernel.
void ss2d_scan_forward_from_dbl(const SS2DScanShape& s, const float* u, const SS2DScanWeights& w,
                                const float* dbl, float* out, float* states = nullptr,
                                bool coarse_exp = false);

// Gradients of sum(out·dout). Accumulates into du and every non-null pointer of g.
// workspace: ss2d_scan_backward_workspace_floats(s) floats, or nullptr (allocated internally).
// states: what ss2d_scan_forward wrote for the same u and weights, or nullptr to recompute.
void ss2d_scan_backward(const SS2DScanShape& s,
                        const float* u,     // u: (B,H,W,D)
                        const SS2DScanWeights& w,
                        const float* dout,  // dout: (B,H,W,D)
                        float* du,          // du: (B,H,W,D), += ; may be nullptr
                        const SS2DScanGrads& g,
                        float* workspace = nullptr,
                        const float* states = nullptr);  // states: (B,4,ceil(L/32),N,D) or nullptr

}  // namespace mm
