// SS2D selective scan for training, float32: forward saving chunk states, and backward
// (the maths is in lib/ops/selective_scan.h; the CPU version, selective_scan.cpp, is the
// reference the tests compare against).
//
// Forward
//   1. dbl (B·L, 4·(R+2N)) = u · x_proj_weightᵀ, one GEMM (rows are spatial positions
//      p = h·W + w; every direction reads the same rows in its own order).
//   2. scan: one thread per (b, k, d) keeps its N = 16 states in registers and walks the L
//      positions of direction k, computing Δ from dt in place (R multiply-adds); a block is
//      one warp (32 channels of one (b, k)), which stages each chunk's x_proj rows and u in
//      shared memory first (stage_chunk), so the steps don't wait on global memory. It writes
//      y into its direction's slice of ys (4, B·L, D), and the state BEFORE every chunk of
//      kScanChunk steps into `states` (B, 4, ceil(L/kScanChunk), N, D): exactly the layout
//      and meaning of the CPU's optional states buffer.
//   3. out = ((ys[0] + ys[1]) + ys[2]) + ys[3], the CPU's order of adding the directions.
//
// Backward (dbl is recomputed; nothing is kept from forward except `states`)
//   1. scan: one thread per (b, k, d) again, one warp = 32 consecutive channels of one
//      (b, k) walking the same steps in lockstep. Chunks from the last: the chunk's 33 states
//      are recomputed from the saved one into local memory, then walked backwards carrying
//      dh. Per step it writes dΔ_pre (the gradient of Δ's pre-activation) and its channel's
//      direct du terms to (4, B·L, D) buffers, and the warp's sum of the per-channel dB_l and
//      dC_l terms (2N = 32 values, one per lane after a transpose-reduction) to a partial
//      per 32-channel block. Sums over positions (dA, dD, dt bias) stay in registers and are
//      written per (b, k, d) at the end.
//   2. fixed-order reductions: the dB/dC partials over channel blocks into ddbl, the
//      per-batch parameter sums over b into the gradients, the direct du terms over k.
//   3. GEMMs: ddbl's dt columns = dΔ_pre · dt_projs_weight[k]; d dt_projs_weight[k] +=
//      dΔ_preᵀ · dt; d x_proj_weight += ddblᵀ · u; du += ddbl · x_proj_weight.
//
// Error against the CPU: exp(Δ·A) and softplus use the CPU's exp polynomial (exp_nonpos),
// softplus log1pf where the CPU has a series (both ~1e-7 relative); the rest is summation
// order (GEMMs, the dB/dC warp reduction). A = -exp(A_logs) is computed in double once per
// thread, as accurate as the CPU's std::exp.
//
// Memory: the workspace (layout in scan_train_common.cuh) is about (2·KC + 8·D + 4·2N·⌈D/32⌉)
// floats per position: 2.1 GB for MedMamba-T's first stage at batch 64 (B·L = 200,704,
// D = 192, R = 12); the saved states are D·N·4/32 = 384 floats per position.
#include <string>

#include "cuda_train_gemm_conv.h"
#include "scan_train_common.cuh"

namespace mm::cuda {
namespace scan_train {

Dims make_dims(const ScanTrainShape& s) {
  MM_CHECK(s.B > 0 && s.H > 0 && s.W > 0 && s.D > 0 && s.R > 0, "scan_train: all sizes must be positive");
  MM_CHECK(s.N == kN, "scan_train: only d_state N = 16 is supported, got " + std::to_string(s.N));
  MM_CHECK(s.H * s.W < (int64_t(1) << 30) && s.D < (int64_t(1) << 30), "scan_train: H·W or D too large");
  MM_CHECK(s.R <= kMaxR, "scan_train: dt rank " + std::to_string(s.R) + " above " + std::to_string(kMaxR));
  MM_CHECK(4 * s.B <= 65535, "scan_train: batch too large for one grid (4·B > 65535)");
  Dims d;
  d.B = int(s.B); d.H = int(s.H); d.W = int(s.W); d.L = d.H * d.W; d.D = int(s.D); d.R = int(s.R);
  d.RN = d.R + 2 * kN; d.KC = 4 * d.RN;
  d.nseg = (d.L + kChunk - 1) / kChunk;
  d.ndblk = (d.D + kWarp - 1) / kWarp;
  d.BL = s.B * d.L;
  return d;
}

Workspace carve(const Dims& d, float* base) {
  Workspace w;
  int64_t off = 0;
  auto take = [&](int64_t n) {
    float* p = base ? base + off : nullptr;
    off += (n + 63) / 64 * 64;
    return p;
  };
  const int64_t dirs = 4 * d.BL * d.D;
  w.dbl = take(d.BL * d.KC);
  w.ddbl = take(d.BL * d.KC);
  w.dir0 = take(dirs);
  w.dir1 = take(dirs);
  w.dbc_part = take(int64_t(d.ndblk) * d.BL * 4 * 2 * kN);
  w.pgrad = take(int64_t(d.B) * 4 * d.D * (kN + 2));
  w.total = off;
  return w;
}

namespace {

// grid (ndblk, 4·B), block kWarp: blockIdx.y = b·4 + k, the warp is channels
// [32·blockIdx.x, +32) of (b, k); lanes past D stage and wait with the others, nothing more.
// Dynamic shared memory: stage_bytes(s).
__global__ void __launch_bounds__(kWarp)
scan_forward_kernel(Dims s, const float* u, const float* dbl, ScanTrainWeights w, float* ys, float* states) {
  extern __shared__ float smem[];
  float* srow = smem;                     // (kChunk, RN)
  float* su = srow + kChunk * s.RN;       // (kChunk, kWarp)
  const int lane = threadIdx.x;
  const int d = blockIdx.x * kWarp + lane;
  const int bk = blockIdx.y, b = bk / 4, k = bk % 4;
  const bool active = d < s.D;
  const Channel c = load_channel(s, w, u, dbl, b, k, active ? d : s.D - 1);
  float* ys_bk = ys + (int64_t(k) * s.B + b) * s.L * s.D + d;
  float* st = states ? states + int64_t(bk) * s.nseg * kN * s.D + d : nullptr;
  float h[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) h[n] = 0.f;
  for (int chunk = 0; chunk < s.nseg; ++chunk) {
    const int l0 = chunk * kChunk, len = min(kChunk, s.L - l0);
    if (st && active) {
#pragma unroll
      for (int n = 0; n < kN; ++n) st[(int64_t(chunk) * kN + n) * s.D] = h[n];
    }
    stage_chunk(s, k, l0, len, c.dbl_b, c.u_b, nullptr, active, lane, srow, su, nullptr);
    for (int i = 0; i < len; ++i) {
      const float* row = srow + i * s.RN;  // dt (R), B (N), C (N)
      const float ul = su[i * kWarp + lane];
      const float delta = softplus(delta_pre(c.wrow, c.bias, row, s.R));
      const float dlu = delta * ul;
      float y = c.Dk * ul;
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        h[n] = exp_nonpos(delta * c.A[n]) * h[n] + dlu * row[s.R + n];
        y += row[s.R + kN + n] * h[n];
      }
      if (active) ys_bk[int64_t(scan_position(k, l0 + i, s.H, s.W)) * s.D] = y;
    }
  }
}

// dst[i] (= or +=) ((src[i] + src[n+i]) + src[2n+i]) + src[3n+i]: the four directions.
__global__ void sum_directions_kernel(float* dst, const float* src, int64_t n, bool accumulate) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = ((src[i] + src[n + i]) + src[2 * n + i]) + src[3 * n + i];
  dst[i] = accumulate ? dst[i] + v : v;
}

}  // namespace

void sum_directions(float* dst, const float* src, int64_t n, bool accumulate, Stream st) {
  constexpr int kThreads = 256;
  sum_directions_kernel<<<grid_for(n, kThreads), kThreads, 0, st>>>(dst, src, n, accumulate);
  MM_CUDA_CHECK_LAUNCH("scan_train sum_directions");
}

}  // namespace scan_train

using namespace scan_train;

int64_t scan_train_states_floats(const ScanTrainShape& s) {
  return s.B * 4 * ((s.H * s.W + kScanChunk - 1) / kScanChunk) * s.N * s.D;
}

int64_t scan_train_workspace_floats(const ScanTrainShape& s) { return carve(make_dims(s), nullptr).total; }

void scan_train_forward(const ScanTrainShape& shape, const float* u, const ScanTrainWeights& w, float* out,
                        float* states, float* workspace, Stream st) {
  const Dims s = make_dims(shape);
  const Workspace ws = carve(s, workspace);
  gemm_f32(false, true, s.BL, s.KC, s.D, 1.f, u, s.D, w.x_proj_weight, s.D, 0.f, ws.dbl, s.KC, st);
  const dim3 grid(unsigned(s.ndblk), unsigned(4 * s.B));
  scan_forward_kernel<<<grid, kWarp, stage_bytes(s), st>>>(s, u, ws.dbl, w, ws.dir0, states);
  MM_CUDA_CHECK_LAUNCH("scan_train_forward");
  sum_directions(out, ws.dir0, s.BL * s.D, false, st);
}

}  // namespace mm::cuda
