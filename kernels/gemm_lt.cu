// GemmRunner: row-major  out (M,N) = act(x (M,K) · w (N,K)^T + bias)  through cuBLASLt.
//
// cuBLASLt is column-major, so we compute the transpose: out^T (N,M) = w (N,K) · x^T (K,M).
// Row-major w (N,K) is column-major (K,N) with ld K, used transposed; row-major x (M,K) is
// column-major (K,M) with ld ldx; row-major out (M,N) is column-major (N,M) with ld ldo.
// The bias then runs along the rows of the column-major result, which is what the
// BIAS epilogues broadcast. One plan (descriptors + heuristic's algorithm) per shape.
#include <cublasLt.h>

#include <map>
#include <tuple>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace mm::cuda {

namespace {

void check_lt(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLASLt: ") + what + " failed with status " + std::to_string(int(st)));
}

cudaDataType_t cuda_type(DType dt) {
  switch (dt) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: throw Error(std::string("GEMM: unsupported element type ") + dtype_name(dt));
  }
}

// Largest power of two (up to 256) dividing the address: the heuristic must know it.
uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al /= 2;
  return al;
}

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

using PlanKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, uint32_t, uint32_t,
                           uint32_t, uint32_t>;

}  // namespace

struct GemmRunner::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = size_t(32) << 20;
  bool allow_tf32 = true;
  std::map<PlanKey, Plan> plans;

  ~Impl() {
    for (auto& [k, p] : plans) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.desc);
    }
    if (workspace) cudaFree(workspace);
    if (handle) cublasLtDestroy(handle);
  }

  Plan& plan_for(const GemmArgs& g) {
    const int epi = g.bias ? (g.relu ? 2 : 1) : (g.relu ? 3 : 0);
    const PlanKey key{g.M, g.N, g.K, g.ldx, g.ldo, int(g.x_type), int(g.out_type), epi, 0,
                      alignment(g.w), alignment(g.x), alignment(g.out), g.bias ? alignment(g.bias) : 256u};
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;

    Plan p;
    const cublasComputeType_t compute =
        g.x_type == DType::F32 ? (allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F) : CUBLAS_COMPUTE_32F;
    check_lt(cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F), "MatmulDescCreate");
    const cublasOperation_t trans = CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans), "TRANSA");
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &no_trans, sizeof no_trans), "TRANSB");
    const cublasLtEpilogue_t epilogue = epi == 2   ? CUBLASLT_EPILOGUE_RELU_BIAS
                                        : epi == 1 ? CUBLASLT_EPILOGUE_BIAS
                                        : epi == 3 ? CUBLASLT_EPILOGUE_RELU
                                                   : CUBLASLT_EPILOGUE_DEFAULT;
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue),
             "EPILOGUE");
    if (g.bias) {
      const cudaDataType_t bt = cuda_type(g.out_type);
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt),
               "BIAS_DATA_TYPE");
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof g.bias),
               "BIAS_POINTER");
    }
    const cudaDataType_t xt = cuda_type(g.x_type), ot = cuda_type(g.out_type);
    check_lt(cublasLtMatrixLayoutCreate(&p.a, xt, uint64_t(g.K), uint64_t(g.N), g.K), "layout w");
    check_lt(cublasLtMatrixLayoutCreate(&p.b, xt, uint64_t(g.K), uint64_t(g.M), g.ldx), "layout x");
    check_lt(cublasLtMatrixLayoutCreate(&p.c, ot, uint64_t(g.N), uint64_t(g.M), g.ldo), "layout out");

    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
    check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                  sizeof workspace_bytes),
             "pref workspace");
    const uint32_t al_w = alignment(g.w), al_x = alignment(g.x), al_o = alignment(g.out);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_w, sizeof al_w);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_x, sizeof al_x);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_o, sizeof al_o);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_o, sizeof al_o);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
      throw Error("cuBLASLt: no algorithm for GEMM M=" + std::to_string(g.M) + " N=" + std::to_string(g.N) +
                  " K=" + std::to_string(g.K) + " x " + dtype_name(g.x_type) + " out " + dtype_name(g.out_type));
    p.algo = result.algo;
    return plans.emplace(key, p).first->second;
  }
};

GemmRunner::GemmRunner(bool allow_tf32) : impl_(std::make_unique<Impl>()) {
  impl_->allow_tf32 = allow_tf32;
  check_lt(cublasLtCreate(&impl_->handle), "Create");
  MM_CUDA_CHECK(cudaMalloc(&impl_->workspace, impl_->workspace_bytes));
}

GemmRunner::~GemmRunner() = default;

void GemmRunner::run(const GemmArgs& g, Stream s) {
  MM_CHECK(g.M > 0 && g.N > 0 && g.K > 0 && g.ldx >= g.K && g.ldo >= g.N,
           "GEMM: bad shape M=" + std::to_string(g.M) + " N=" + std::to_string(g.N) + " K=" + std::to_string(g.K));
  Plan& p = impl_->plan_for(g);
  if (g.bias)  // the key holds the bias alignment, not the pointer: set it for this call
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof g.bias),
             "BIAS_POINTER");
  const float alpha = 1.f, beta = 0.f;
  check_lt(cublasLtMatmul(impl_->handle, p.desc, &alpha, g.w, p.a, g.x, p.b, &beta, g.out, p.c, g.out, p.c,
                          &p.algo, impl_->workspace, impl_->workspace_bytes, s),
           "Matmul");
}

}  // namespace mm::cuda
