// dt_proj's backward in the SS2D training scan (overview at the top of scan_train_forward.cu):
// from dΔ_pre (4, B·L, D), which the backward kernel writes, per direction k
//   d dt (B·L, R) = dΔ_pre_k · W_k          into ddbl's dt columns,
//   d W_k (D, R) += dΔ_pre_kᵀ · dt_k         dt_k: dbl's dt columns.
// R, the dt rank, is 3 to 24 in MedMamba. GEMMs on operands R columns wide have rows that
// are not 16-byte aligned, and cuBLAS then ran them in its align1 kernels at about a quarter
// of the memory's rate (stage 1 of MedMamba-T: 52 and 47 µs a direction on an H100). So W and
// dt are copied with their rows padded with zeros to Rp = ⌈R/8⌉·8 columns (in bf16 under bf16
// GEMMs: the copy is the rounding the GEMM would make anyway) and the GEMMs write Rp-column
// results (21 and 22 µs there). Zero columns add nothing. d dt stays padded: the reduction
// that writes ddbl's rows takes its dt columns from there.
#include <cuda_bf16.h>

#include "cuda_train_gemm_conv.h"
#include "scan_train_common.cuh"

namespace mm::cuda::scan_train {
namespace {

constexpr int kThreads = 256;

int64_t padded_rank(int R) { return (R + 7) / 8 * 8; }

// grid (⌈rows/kThreads⌉, groups): dst (groups·rows, Rp) = src's R columns of each row, zeros
// after; row `row` of group g at src + g·group_stride + row·ld. A thread per row, writing
// 8 elements at a time (Rp is a multiple of 8, so every piece is aligned).
template <class T>
__global__ void pad_columns_kernel(T* dst, const float* src, int64_t rows, int64_t group_stride, int64_t ld, int R,
                                   int Rp) {
  const int64_t row = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (row >= rows) return;
  const int64_t g = blockIdx.y;
  const float* in = src + g * group_stride + row * ld;
  T* out = dst + (g * rows + row) * Rp;
  for (int r0 = 0; r0 < Rp; r0 += 8) {
    float v[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = r0 + e < R ? in[r0 + e] : 0.f;
    store_pack<T, 8>(out + r0, v);
  }
}

// dweight[i·R + r] += padded[i·Rp + r] for the 4·D rows i and r < R.
__global__ void add_dw_kernel(Dims s, int Rp, const float* padded, float* dweight) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= 4 * int64_t(s.D) * s.R) return;
  dweight[i] += padded[i / s.R * Rp + i % s.R];
}

template <class T>
GemmOperand operand(const T* p, int64_t ld) {
  if constexpr (std::is_same<T, float>::value)
    return f32_operand(p, ld);
  else
    return bf16_operand(reinterpret_cast<const uint16_t*>(p), ld);
}

// The scratch: d dt (4, B·L, Rp) float32 first, then d W (4·D, Rp) float32, and the padded
// copies W (4·D, Rp) and dt (4, B·L, Rp) in elements of element_bytes. base nullptr: sizes
// only (floats).
struct Scratch {
  float *ddt, *dw;
  void *w_pad, *dt_pad;
  int64_t floats;
};
Scratch carve_scratch(const Dims& s, float* base, int64_t element_bytes) {
  const int64_t Rp = padded_rank(s.R), per_float = int64_t(sizeof(float)) / element_bytes;
  WorkspaceCarver carver{base};
  Scratch c;
  c.ddt = carver.take(4 * s.BL * Rp);
  c.dw = carver.take(4 * int64_t(s.D) * Rp);
  c.w_pad = carver.take(4 * int64_t(s.D) * Rp / per_float);
  c.dt_pad = carver.take(4 * s.BL * Rp / per_float);
  c.floats = carver.floats;
  return c;
}

// T: the padded copies' element type, the GEMMs' operand type (float or bf16).
template <class T>
void run(const Dims& s, const GemmOperand dpre[4], const float* weight, const float* dbl, float* dweight,
         const Scratch& c, Stream st) {
  const int Rp = int(padded_rank(s.R));
  T* w_pad = static_cast<T*>(c.w_pad);
  T* dt_pad = static_cast<T*>(c.dt_pad);
  pad_columns_kernel<T><<<dim3(grid_for(4 * s.D, kThreads), 1), kThreads, 0, st>>>(w_pad, weight, 4 * s.D, 0, s.R,
                                                                                   s.R, Rp);
  MM_CUDA_CHECK_LAUNCH("scan_train_backward pad dt_projs_weight");
  for (int k = 0; k < 4; ++k)  // d dt_k (B·L, Rp) = dΔ_pre_k · W_k
    gemm(false, false, s.BL, Rp, s.D, 1.f, dpre[k], operand(w_pad + int64_t(k) * s.D * Rp, Rp), 0.f,
         c.ddt + k * s.BL * Rp, Rp, st);
  if (!dweight) return;
  pad_columns_kernel<T><<<dim3(grid_for(s.BL, kThreads), 4), kThreads, 0, st>>>(dt_pad, dbl, s.BL, s.RN, s.ldbl, s.R,
                                                                                Rp);
  MM_CUDA_CHECK_LAUNCH("scan_train_backward pad dt");
  for (int k = 0; k < 4; ++k)  // d W_k (D, Rp) = dΔ_pre_kᵀ · dt_k
    gemm(true, false, s.D, Rp, s.BL, 1.f, dpre[k], operand(dt_pad + k * s.BL * Rp, Rp), 0.f,
         c.dw + int64_t(k) * s.D * Rp, Rp, st);
  add_dw_kernel<<<grid_for(4 * int64_t(s.D) * s.R, kThreads), kThreads, 0, st>>>(s, Rp, c.dw, dweight);
  MM_CUDA_CHECK_LAUNCH("scan_train_backward add dW");
}

}  // namespace

int dt_proj_padded_rank(const Dims& s) { return int(padded_rank(s.R)); }

int64_t dt_proj_backward_scratch_floats(const Dims& s) {  // with float32 copies, the larger
  return carve_scratch(s, nullptr, sizeof(float)).floats;
}

const float* dt_proj_backward(const Dims& s, const float* dpre, const uint16_t* dpre16, const float* weight,
                              const float* dbl, float* dweight, float* scratch, Stream st) {
  const int64_t dir = s.BL * s.D;  // one direction's dΔ_pre (B·L, D)
  GemmOperand ops[4];
  for (int k = 0; k < 4; ++k)
    ops[k] = dpre16 ? bf16_operand(dpre16 + k * dir, s.D) : f32_operand(dpre + k * dir, s.D);
  if (gemm_compute() == GemmCompute::BF16) {
    const Scratch c = carve_scratch(s, scratch, sizeof(__nv_bfloat16));
    run<__nv_bfloat16>(s, ops, weight, dbl, dweight, c, st);
    return c.ddt;
  }
  const Scratch c = carve_scratch(s, scratch, sizeof(float));
  run<float>(s, ops, weight, dbl, dweight, c, st);
  return c.ddt;
}

}  // namespace mm::cuda::scan_train
