#pragma once
// The SS2D selective scan of the CUDA training backend, forward and backward, float32.
// The same function as lib/ops/selective_scan.h (read its header for the recurrence, the
// four directions and the shapes), with the same weight layouts:
//   x_proj_weight (4, R+2N, D), dt_projs_weight (4, D, R), dt_projs_bias (4, D),
//   A_logs (4·D, N), Ds (4·D);  u, out, dout, du: (B,H,W,D) channels-last.
//
// Forward saves the scan state every kScanChunk steps of every direction (`states`), and
// backward runs the recurrence in reverse chunk by chunk from those checkpoints, so it
// recomputes one chunk forward at a time instead of storing every step.
//
// Determinism: no floating-point atomics. Gradients summed over positions, batch and
// channels (A_logs, Ds, dt_projs, x_proj, and dB/dC over channels) are written as partials
// over a fixed partition and reduced in a fixed order.
#include <cstdint>

#include "cuda_ops.h"  // Stream

namespace mm::cuda {

constexpr int64_t kScanChunk = 32;

struct ScanTrainShape {
  int64_t B, H, W, D, N, R;  // N = 16 (d_state) is the only state size supported
  // Chunks per segment: the steps of a direction are cut into segments scanned in parallel
  // (see scan_train_forward.cu). 0 picks enough segments to fill the GPU (or takes the
  // environment's MM_SCAN_SEGMENT_CHUNKS, for experiments); tests set it to reach every path
  // on small shapes. The results depend on it only by rounding.
  int64_t segment_chunks = 0;
  // Lanes per channel of forward's main kernel (1, 2 or 4: a channel's 16 states split over
  // them). 0 picks the fewest that fill the GPU; tests set it to reach every path.
  int64_t forward_lanes = 0;
  // The workspace of the bf16 GEMMs: backward keeps dΔ_pre only as the bf16 copy its GEMMs
  // read, in a smaller workspace (about 10.5 instead of 12 floats per position and channel),
  // so a slice of 64 MedMamba-T images trains within 4 GiB. The scan then refuses to run
  // unless gemm_compute() is BF16. false: a workspace that serves every GEMM compute.
  bool bf16 = false;
};
struct ScanTrainWeights {
  const float *x_proj_weight, *dt_projs_weight, *dt_projs_bias, *A_logs, *Ds;
};
struct ScanTrainGrads {  // each ACCUMULATED (+=); nullptr skips
  float *x_proj_weight = nullptr, *dt_projs_weight = nullptr, *dt_projs_bias = nullptr, *A_logs = nullptr,
        *Ds = nullptr;
};

// Forward and backward run the batch in equal slices of at least kScanBatchSlice images,
// and of enough images to fill the GPU without cutting the steps into segments (batches of
// 64 at 224 px are not sliced): the workspace, which grows with the images scanned at once
// (4 directions of (L,D) per image, and more), then holds one slice. Forward, which needs
// fewer of those buffers, takes as many whole slices at once as fit in the same workspace.
// Sums over the batch add the slices in order: still deterministic. The environment's
// MM_SCAN_BATCH_SLICE sets the slice instead, for experiments.
// 64, not 32: MedMamba-T's bf16 step at batch 64 is ~5% faster unsliced (stage 1's 3
// channel blocks x 4 directions x 32 images left a quarter of the H200's block slots
// idle), and with the bf16 workspace (ScanTrainShape::bf16) it still holds under 4 GiB.
constexpr int64_t kScanBatchSlice = 64;
int64_t scan_train_batch_slice(const ScanTrainShape& s);  // images per slice

// Floats of `states`: B·4·ceil(L/kScanChunk)·N·D.
int64_t scan_train_states_floats(const ScanTrainShape& s);
// Floats of device workspace forward and backward need (one buffer serves both; contents
// need not persist between calls, but backward reads nothing from it that forward left).
int64_t scan_train_workspace_floats(const ScanTrainShape& s);

// out (B,H,W,D) overwritten; states overwritten when not nullptr. u16, under GemmCompute::BF16
// only: nullptr, or u rounded to bf16 by its producer (the bits of __nv_bfloat16, (B,H,W,D)),
// which the x_proj GEMMs then read instead of rounding u themselves.
void scan_train_forward(const ScanTrainShape& s, const float* u, const ScanTrainWeights& w, float* out,
                        float* states, float* workspace, Stream st, const uint16_t* u16 = nullptr);
// Gradients of sum(out·dout): du (may be nullptr; accumulates unless `out` says
// Overwrite) and g (accumulates). states: what forward wrote for the same u and weights.
// u16 as in forward.
void scan_train_backward(const ScanTrainShape& s, const float* u, const ScanTrainWeights& w, const float* dout,
                         float* du, const ScanTrainGrads& g, const float* states, float* workspace, Stream st,
                         GradOut out = GradOut::Accumulate, const uint16_t* u16 = nullptr);

}  // namespace mm::cuda
