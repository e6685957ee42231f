// Float32 GEMM through cuBLAS and the Linear layer of the CUDA training backend.
//
// cuBLAS is column-major. A row-major (R,C) matrix with row stride ld is the column-major
// (C,R) matrix with leading dimension ld, i.e. its transpose. So the row-major product
//   C (M,N) = op(A) · op(B)
// is computed as the column-major product
//   Cᵀ (N,M) = op(B)ᵀ · op(A)ᵀ
// where the stored B and A, read column-major, already are Bᵀ and Aᵀ: cuBLAS gets B first,
// A second, the same transpose flags, and m = N, n = M.
//
// Determinism: cuBLAS returns bit-identical results run to run on one GPU model when it
// does not pick its workspace from the per-stream default pool (which depends on what else
// runs), so every handle owns its workspace and sets it on every call (cublasSetStream
// resets it to the pool). Pedantic math keeps float32 GEMMs off TF32 tensor cores, also
// when NVIDIA_TF32_OVERRIDE asks for them; GemmCompute::TF32 names its compute type in
// cublasGemmEx instead. GemmCompute::BF16 rounds float32 operands into bf16 copies first:
// cuBLAS's 32F_FAST_16BF compute type only allows bf16, and on the H200 it ran TF32 kernels
// (the same bits as TF32). cuBLAS picks the same algorithm for the same shapes, so all three
// are deterministic.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <initializer_list>
#include <memory>
#include <string>

#include "cuda_common.cuh"
#include "cuda_ops.h"  // GemmRunner
#include "cuda_scratch.h"
#include "cuda_train_gemm_conv.h"

namespace mm::cuda {

namespace {

constexpr int kThreads = 256;
constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // what NVIDIA recommends for Hopper

void check_cublas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS: ") + what + " failed: " + cublasGetStatusString(st) + " (status " +
                std::to_string(int(st)) + ")");
}

// One handle and workspace per host thread, made on first use, released at thread exit.
struct ThreadBlas {
  cublasHandle_t handle = nullptr;
  void* workspace = nullptr;

  ThreadBlas() {
    MM_CUDA_CHECK(cudaMalloc(&workspace, kWorkspaceBytes));
    try {
      check_cublas(cublasCreate(&handle), "cublasCreate");
      check_cublas(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode");
    } catch (...) {  // a half-made object runs no destructor
      if (handle) cublasDestroy(handle);
      cudaFree(workspace);
      throw;
    }
  }
  ~ThreadBlas() {  // at thread exit: nothing useful to do on failure
    if (handle) cublasDestroy(handle);
    if (workspace) cudaFree(workspace);
  }
  ThreadBlas(const ThreadBlas&) = delete;
  ThreadBlas& operator=(const ThreadBlas&) = delete;
};

thread_local GemmCompute t_gemm_compute = GemmCompute::F32;
struct Bf16Twin {
  const float* base = nullptr;
  int64_t n = 0;
  const uint16_t* twin = nullptr;
};
thread_local Bf16Twin t_bf16_twin;  // Bf16TwinScope's

cublasHandle_t blas_on(Stream s) {
  thread_local ThreadBlas blas;
  check_cublas(cublasSetStream(blas.handle, s), "cublasSetStream");
  check_cublas(cublasSetWorkspace(blas.handle, blas.workspace, kWorkspaceBytes), "cublasSetWorkspace");
  return blas.handle;
}

// out (n / C, C) = bias broadcast over the rows; n < 2^31 (for_row_chunks).
__global__ void fill_rows_kernel(float* __restrict__ out, const float* __restrict__ bias, uint32_t n, FastDivmod C) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = bias[C.mod(i, C.div(i))];
}

// Column sums in two passes over a partition of the rows that depends on the shape only:
// block (32 columns, 8 row lanes) per (column tile, row part) writes the part's partial sum,
// then one warp per column adds the parts in a fixed order. No atomics: bit-identical reruns.
constexpr int kSumCols = 32, kSumLanes = 8;
constexpr int64_t kRowsPerPart = 256, kMaxParts = 1024;

__global__ void column_partials_kernel(float* __restrict__ partial, const float* __restrict__ a, int64_t rows,
                                       int64_t C, int64_t rows_per_part) {
  __shared__ float lane_sums[kSumLanes][kSumCols + 1];
  const int64_t c = int64_t(blockIdx.x) * kSumCols + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_part;
  const int64_t r1 = min(rows, r0 + rows_per_part);
  float sum = 0.f;
  if (c < C)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kSumLanes) sum += a[r * C + c];
  lane_sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float total = 0.f;
    for (int l = 0; l < kSumLanes; ++l) total += lane_sums[l][threadIdx.x];
    partial[int64_t(blockIdx.y) * C + c] = total;
  }
}

// Warp c: acc[c] += the sum of partial (parts, C)'s column c.
__global__ void add_parts_kernel(float* __restrict__ acc, const float* __restrict__ partial, int64_t parts,
                                 int64_t C) {
  const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (c >= C) return;
  const double sum = warp_sum_strided(partial + c, parts, C);
  if (threadIdx.x % 32 == 0) acc[c] += float(sum);
}

// acc (C) += column sums of a (rows,C).
void add_column_sums(float* acc, const float* a, int64_t rows, int64_t C, Stream s) {
  if (rows <= 0 || C <= 0) return;
  const int64_t parts = std::min<int64_t>((rows + kRowsPerPart - 1) / kRowsPerPart, kMaxParts);
  const int64_t rows_per_part = (rows + parts - 1) / parts;
  float* partial = static_cast<float*>(reduction_scratch(parts * C * int64_t(sizeof(float))));
  const dim3 block(kSumCols, kSumLanes), grid(grid_for(C, kSumCols), unsigned(parts));
  column_partials_kernel<<<grid, block, 0, s>>>(partial, a, rows, C, rows_per_part);
  MM_CUDA_CHECK_LAUNCH("column_partials_kernel");
  add_parts_kernel<<<grid_for(C * 32, kThreads), kThreads, 0, s>>>(acc, partial, parts, C);
  MM_CUDA_CHECK_LAUNCH("add_parts_kernel");
}

// dst (rows, cols) packed = src (rows, cols) with row stride ld, rounded to bf16 (nearest even).
// One thread per kVec elements of the packed output, its row and group by FastDivmod: the
// first version indexed each element with a 64-bit division and took 11% of a training step,
// and the second, a block per row, left all but a few threads idle on the scan's (B·L, R)
// slices of 2 to 24 columns (72 us a copy of 2.4 MB).
template <int kVec>
__global__ void to_bf16_kernel(__nv_bfloat16* __restrict__ dst, const float* __restrict__ src, uint32_t n,
                               FastDivmod groups, int64_t ld) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t r = groups.div(i), g = groups.mod(i, r);
  const float* s = src + int64_t(r) * ld + int64_t(g) * kVec;
  if constexpr (kVec == 4) {
    const float4 v = *reinterpret_cast<const float4*>(s);
    reinterpret_cast<__nv_bfloat162*>(dst)[2 * int64_t(i)] = __floats2bfloat162_rn(v.x, v.y);
    reinterpret_cast<__nv_bfloat162*>(dst)[2 * int64_t(i) + 1] = __floats2bfloat162_rn(v.z, v.w);
  } else {
    dst[i] = __float2bfloat16_rn(*s);
  }
}

void to_bf16(__nv_bfloat16* dst, const float* src, int64_t rows, int64_t cols, int64_t ld, Stream s) {
  const bool vec4 = cols % 4 == 0 && ld % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0;
  const int64_t groups = vec4 ? cols / 4 : cols;
  for_row_chunks(rows, groups, [&](int64_t r0, int64_t part) {
    const uint32_t n = uint32_t(part * groups);
    if (vec4)
      to_bf16_kernel<4><<<grid_for(n, kThreads), kThreads, 0, s>>>(dst + r0 * cols, src + r0 * ld, n,
                                                                    FastDivmod(uint32_t(groups)), ld);
    else
      to_bf16_kernel<1><<<grid_for(n, kThreads), kThreads, 0, s>>>(dst + r0 * cols, src + r0 * ld, n,
                                                                    FastDivmod(uint32_t(groups)), ld);
    MM_CUDA_CHECK_LAUNCH("to_bf16_kernel");
  });
}

// bf16 elements of a packed copy, rounded up so that a copy placed after it stays 256-byte aligned.
int64_t padded_bf16(int64_t n) { return (n + 127) / 128 * 128; }

// op (rows, cols) as a bf16 operand without a copy: as it is when its producer wrote bf16, or
// its Bf16TwinScope twin; {} when it must be rounded.
GemmOperand bf16_in_place(GemmOperand op, int64_t rows, int64_t cols) {
  if (op.bf16) return op;
  const Bf16Twin& t = t_bf16_twin;
  if (t.twin && rows > 0 && op.f32 >= t.base && op.f32 + (rows - 1) * op.ld + cols <= t.base + t.n)
    return bf16_operand(t.twin + (op.f32 - t.base), op.ld);
  return {};
}

// The bf16 GEMM: operands given in float32 are rounded into packed copies (those a producer
// wrote in bf16 are read where they are), products summed in float32; C float32, or bf16
// with c_bf16.
cublasStatus_t gemm_bf16_operands(cublasHandle_t h, cublasOperation_t op_a, cublasOperation_t op_b, int64_t M,
                                  int64_t N, int64_t K, float alpha, GemmOperand A, GemmOperand B, float beta,
                                  void* C, bool c_bf16, int64_t ldc, Stream s) {
  const int64_t a_rows = op_a == CUBLAS_OP_T ? K : M, a_cols = op_a == CUBLAS_OP_T ? M : K;
  const int64_t b_rows = op_b == CUBLAS_OP_T ? N : K, b_cols = op_b == CUBLAS_OP_T ? K : N;
  round_to_bf16({{&A, a_rows, a_cols}, {&B, b_rows, b_cols}}, s);
  return cublasGemmEx(h, op_b, op_a, int(N), int(M), int(K), &alpha, B.bf16, CUDA_R_16BF, int(B.ld), A.bf16,
                      CUDA_R_16BF, int(A.ld), &beta, C, c_bf16 ? CUDA_R_16BF : CUDA_R_32F, int(ldc),
                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

}  // namespace

GemmOperand bf16_operand_copy(const float* src, int64_t rows, int64_t cols, int64_t ld, uint16_t* dst, Stream s) {
  const GemmOperand op = f32_operand(src, ld);
  if (const GemmOperand in_place = bf16_in_place(op, rows, cols); in_place.bf16) return in_place;
  return bf16_packed_copy(src, rows, cols, ld, dst, s);
}

void round_to_bf16(std::initializer_list<Bf16Request> ops, Stream s) {
  int64_t elements = 0;
  for (const Bf16Request& r : ops) {
    if (!r.op) continue;
    if (const GemmOperand in_place = bf16_in_place(*r.op, r.rows, r.cols); in_place.bf16) *r.op = in_place;
    else elements += padded_bf16(r.rows * r.cols);
  }
  if (elements == 0) return;
  auto* dst = static_cast<uint16_t*>(gemm_operand_scratch(elements * 2));
  for (const Bf16Request& r : ops) {
    if (!r.op || r.op->bf16) continue;
    *r.op = bf16_packed_copy(r.op->f32, r.rows, r.cols, r.op->ld, dst, s);  // K = 0: rounds nothing
    dst += padded_bf16(r.rows * r.cols);
  }
}

GemmOperand bf16_packed_copy(const float* src, int64_t rows, int64_t cols, int64_t ld, uint16_t* dst, Stream s) {
  if (rows > 0 && cols > 0) to_bf16(reinterpret_cast<__nv_bfloat16*>(dst), src, rows, cols, ld, s);
  return bf16_operand(dst, cols);
}

Bf16TwinScope::Bf16TwinScope(const float* base, int64_t n, const uint16_t* twin)
    : base_(t_bf16_twin.base), n_(t_bf16_twin.n), twin_(t_bf16_twin.twin) {
  t_bf16_twin = {base, n, twin};
}
Bf16TwinScope::~Bf16TwinScope() { t_bf16_twin = {base_, n_, twin_}; }

void set_gemm_compute(GemmCompute c) { t_gemm_compute = c; }
GemmCompute gemm_compute() { return t_gemm_compute; }

// gemm and gemm_bf16_out: C float32, or bf16 (c_bf16, GemmCompute::BF16 only).
static void gemm_to(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, GemmOperand A,
                    GemmOperand B, float beta, void* C, bool c_bf16, int64_t ldc, Stream s) {
  const int64_t lda = A.ld, ldb = B.ld;
  const auto dims = [&] {
    return "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
           " lda=" + std::to_string(lda) + " ldb=" + std::to_string(ldb) + " ldc=" + std::to_string(ldc) +
           (trans_a ? " A^T" : "") + (trans_b ? " B^T" : "") + (A.bf16 ? " A bf16" : "") + (B.bf16 ? " B bf16" : "");
  };
  MM_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size, " + dims());
  for (int64_t v : {M, N, K, lda, ldb, ldc})
    MM_CHECK(v <= INT_MAX, "gemm: a size or stride exceeds cuBLAS's 32-bit range, " + dims());
  MM_CHECK((A.bf16 == nullptr && B.bf16 == nullptr && !c_bf16) || t_gemm_compute == GemmCompute::BF16,
           "gemm: bf16 operands or output need GemmCompute::BF16, " + dims());
  if (M == 0 || N == 0) return;
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasHandle_t h = blas_on(s);
  cublasStatus_t st;
  if (t_gemm_compute == GemmCompute::F32) {
    check_cublas(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode(PEDANTIC)");
    st = cublasSgemm(h, op_b, op_a, int(N), int(M), int(K), &alpha, B.f32, int(ldb), A.f32, int(lda), &beta,
                     static_cast<float*>(C), int(ldc));
  } else if (t_gemm_compute == GemmCompute::TF32) {
    check_cublas(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode(DEFAULT)");
    st = cublasGemmEx(h, op_b, op_a, int(N), int(M), int(K), &alpha, B.f32, CUDA_R_32F, int(ldb), A.f32, CUDA_R_32F,
                      int(lda), &beta, C, CUDA_R_32F, int(ldc), CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
  } else {
    check_cublas(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode(DEFAULT)");
    st = gemm_bf16_operands(h, op_a, op_b, M, N, K, alpha, A, B, beta, C, c_bf16, ldc, s);
  }
  if (st != CUBLAS_STATUS_SUCCESS) check_cublas(st, ("cublas GEMM " + dims()).c_str());
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, GemmOperand A, GemmOperand B,
          float beta, float* C, int64_t ldc, Stream s) {
  gemm_to(trans_a, trans_b, M, N, K, alpha, A, B, beta, C, false, ldc, s);
}

void gemm_bf16_out(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B,
                   uint16_t* C, int64_t ldc, Stream s) {
  gemm_to(trans_a, trans_b, M, N, K, 1.f, A, B, 0.f, C, true, ldc, s);
}

// out (N,Cout) = x (N,Cin) · weightᵀ + bias through cuBLASLt's BIAS epilogue, in one pass,
// under GemmCompute::TF32 and BF16: cublasGemmEx has no epilogue, and a fill of out with the
// bias and a GEMM that read it back (beta = 1) cost MedMamba-T 0.7 ms of a 47 ms step at batch
// 64 (ncu, H100), 1.3% of its bf16 and 2.3% of its TF32 img/s. GemmCompute::F32 keeps that
// way, through cublasGemmEx's pedantic math. One GemmRunner per host thread (as cuBLAS's
// handles are), with its own workspace, so its plans and results repeat.
static void linear_forward_biased(float* out, GemmOperand x, GemmOperand weight, const float* bias, int64_t N,
                                  int64_t Cin, int64_t Cout, Stream s) {
  thread_local const std::unique_ptr<GemmRunner> runner = std::make_unique<GemmRunner>(true);
  GemmArgs g;
  g.M = N, g.N = Cout, g.K = Cin, g.out = out, g.ldo = Cout, g.out_type = DType::F32, g.bias = bias;
  if (t_gemm_compute == GemmCompute::BF16) {
    GemmOperand xb = x, wb = weight;  // wb packed, as GemmArgs's w must be
    round_to_bf16({{&xb, N, Cin}, {&wb, Cout, Cin}}, s);
    g.x = xb.bf16, g.ldx = xb.ld, g.x_type = DType::BF16, g.w = wb.bf16;
  } else {
    MM_CHECK(x.f32 && weight.f32, "linear_forward: bf16 operands need GemmCompute::BF16");
    g.x = x.f32, g.ldx = x.ld, g.x_type = DType::F32, g.w = weight.f32;  // CUBLAS_COMPUTE_32F_FAST_TF32
  }
  runner->run(g, s);
}

void linear_forward(float* out, GemmOperand x, GemmOperand weight, const float* bias, int64_t N, int64_t Cin,
                    int64_t Cout, Stream s) {
  if (N <= 0 || Cout <= 0) return;
  MM_CHECK(weight.ld == Cin, "linear_forward: the weight must be packed (ld = Cin)");
  if (bias && Cin > 0 && t_gemm_compute != GemmCompute::F32) {
    linear_forward_biased(out, x, weight, bias, N, Cin, Cout, s);
    return;
  }
  if (bias) {
    for_row_chunks(N, Cout, [&](int64_t r0, int64_t rows) {
      const uint32_t n = uint32_t(rows * Cout);
      fill_rows_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(out + r0 * Cout, bias, n, FastDivmod(uint32_t(Cout)));
      MM_CUDA_CHECK_LAUNCH("fill_rows_kernel");
    });
  }
  // out (N,Cout) (+)= x (N,Cin) · weightᵀ (Cin,Cout)
  gemm(false, true, N, Cout, Cin, 1.f, x, weight, bias ? 1.f : 0.f, out, Cout, s);
}

void linear_backward(float* dx, float* dweight, float* dbias, GemmOperand dout, GemmOperand x, const float* weight,
                     int64_t N, int64_t Cin, int64_t Cout, Stream s, GradOut out) {
  MM_CHECK(!dbias || dout.f32, "linear_backward: dbias is summed from a float32 dout, not a bf16 one");
  GemmOperand dout_op = dout, weight_op = f32_operand(weight, Cin), x_op = x;
  if (dx && dweight && t_gemm_compute == GemmCompute::BF16 && N > 0 && Cout > 0) {
    // Both GEMMs read dout: round it (and the others) into bf16 once, not once per GEMM.
    round_to_bf16({{&dout_op, N, Cout}, {&weight_op, Cout, Cin}, {&x_op, N, Cin}}, s);
  }
  // dx (N,Cin) (+)= dout (N,Cout) · weight (Cout,Cin)
  if (dx) gemm(false, false, N, Cin, Cout, 1.f, dout_op, weight_op, out == GradOut::Accumulate ? 1.f : 0.f, dx, Cin, s);
  // dweight (Cout,Cin) += doutᵀ (Cout,N) · x (N,Cin)
  if (dweight) gemm(true, false, Cout, Cin, N, 1.f, dout_op, x_op, 1.f, dweight, Cin, s);
  if (dbias) add_column_sums(dbias, dout.f32, N, Cout, s);
}

}  // namespace mm::cuda
