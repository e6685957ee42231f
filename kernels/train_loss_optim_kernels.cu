// Loss and optimiser kernels (float32), mirroring lib/ops/cross_entropy.cpp and
// lib/train/optimizer.cpp. The reductions (the loss over the batch, the gradient norm) write
// per-row or per-block partials and sum them in a fixed order in a second kernel: the same
// inputs give the same bits.
#include <algorithm>
#include <cmath>

#include "cuda_common.cuh"
#include "cuda_scratch.h"
#include "cuda_train_ops.h"

namespace mm::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kNormPerThread = 16;                         // floats one thread squares in stage one
constexpr int64_t kNormBlockFloats = kThreads * kNormPerThread;
constexpr uint8_t kRoleBuffer = 2;                         // never trained, not in norms
constexpr uint8_t kRoleDecayed = 0;                        // trained with weight decay

// NaN for a label outside [0,K): the loss becomes NaN instead of reading out of bounds
// (the CPU op throws; a kernel cannot).
__device__ __forceinline__ double label_weight(const float* class_weights, int64_t y, int64_t K) {
  if (y < 0 || y >= K) return nan("");
  return class_weights ? double(class_weights[y]) : 1.0;
}

__device__ __forceinline__ double class_weight(const float* class_weights, int64_t k) {
  return class_weights ? double(class_weights[k]) : 1.0;
}

// One thread per row b: probs, and the row's terms of the loss into row_terms (3,B):
// w[y]·(logsumexp - z[y]), sum_k w[k]·(logsumexp - z[k]) (with smoothing only), w[y].
__global__ void cross_entropy_rows_kernel(double* row_terms, float* probs, const float* logits,
                                          const int64_t* labels, const float* class_weights, double eps,
                                          int64_t B, int64_t K) {
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const float* z = logits + b * K;
  const int64_t y = labels[b];
  float mx = z[0];
  for (int64_t k = 1; k < K; ++k) mx = fmaxf(mx, z[k]);
  double sum = 0.0;
  for (int64_t k = 0; k < K; ++k) sum += exp(double(z[k]) - mx);
  const double log_sum = log(sum) + mx;
  const double wy = label_weight(class_weights, y, K);  // NaN when y is out of range
  row_terms[b] = wy * (log_sum - (y >= 0 && y < K ? z[y] : 0.f));
  double smooth = 0.0;
  if (eps > 0.0)
    for (int64_t k = 0; k < K; ++k) smooth += class_weight(class_weights, k) * (log_sum - z[k]);
  row_terms[B + b] = smooth;
  row_terms[2 * B + b] = wy;
  if (probs)
    for (int64_t k = 0; k < K; ++k) probs[b * K + k] = float(exp(double(z[k]) - log_sum));
}

__global__ void cross_entropy_total_kernel(float* loss, const double* row_terms, double eps, int64_t B, int64_t K) {
  double nll = 0.0, smooth = 0.0, W = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    nll += row_terms[b];
    smooth += row_terms[B + b];
    W += row_terms[2 * B + b];
  }
  *loss = float(((1.0 - eps) * nll + eps / double(K) * smooth) / W);
}

// One thread per (b,k). With t[b,k] = (1-eps) w[y_b] [k == y_b] + eps/K w[k]:
// dz[b,k] = dloss·(p[b,k]·sum_j t[b,j] - t[b,k]) / W. B and K are small (a batch of
// class scores), so each thread sums W and sum_k w[k] itself, in order.
__global__ void cross_entropy_backward_kernel(float* dlogits, const float* probs, const int64_t* labels,
                                              const float* class_weights, double eps, float dloss, int64_t B,
                                              int64_t K) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * K) return;
  const int64_t b = i / K, k = i - b * K;
  double W = 0.0, smooth_total = 0.0;
  for (int64_t r = 0; r < B; ++r) W += label_weight(class_weights, labels[r], K);
  for (int64_t j = 0; j < K; ++j) smooth_total += class_weight(class_weights, j);
  const double scale = double(dloss) / W;
  const double wy = label_weight(class_weights, labels[b], K);
  const double t_sum = (1.0 - eps) * wy + eps / double(K) * smooth_total;
  const double t = (k == labels[b] ? (1.0 - eps) * wy : 0.0) + eps / double(K) * class_weight(class_weights, k);
  dlogits[i] += float(scale * (double(probs[i]) * t_sum - t));
}

// Tree sum of one double per thread of a kThreads block, in a fixed order; the total in v[0].
__device__ void block_sum(double* v) {
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    __syncthreads();
    if (int(threadIdx.x) < stride) v[threadIdx.x] += v[threadIdx.x + stride];
  }
  __syncthreads();
}

// Stage one: block k sums the squares of the trained floats in [k·kNormBlockFloats, +kNormBlockFloats).
__global__ void grad_norm_partials_kernel(double* part, const float* g, const uint8_t* role, int64_t n) {
  __shared__ double v[kThreads];
  const int64_t base = int64_t(blockIdx.x) * kNormBlockFloats;
  double acc = 0.0;
  for (int j = 0; j < kNormPerThread; ++j) {
    const int64_t i = base + int64_t(j) * kThreads + threadIdx.x;
    if (i < n && role[i] != kRoleBuffer) acc += double(g[i]) * double(g[i]);
  }
  v[threadIdx.x] = acc;
  block_sum(v);
  if (threadIdx.x == 0) part[blockIdx.x] = v[0];
}

// Stage two, one block: the partials in a fixed order, then the square root.
__global__ void grad_norm_total_kernel(float* norm, const double* part, int64_t parts) {
  __shared__ double v[kThreads];
  double acc = 0.0;
  for (int64_t k = threadIdx.x; k < parts; k += kThreads) acc += part[k];
  v[threadIdx.x] = acc;
  block_sum(v);
  if (threadIdx.x == 0) *norm = float(sqrt(v[0]));
}

__global__ void clip_grads_kernel(float* g, const uint8_t* role, int64_t n, const float* norm, float max_norm) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const double total = double(*norm);
  if (i >= n || !(total > double(max_norm)) || role[i] == kRoleBuffer) return;
  g[i] *= float(double(max_norm) / (total + 1e-6));
}

struct AdamWScalars {
  float b1, b2, eps, step_size, bc2_sqrt, decay;
};

// The float operations of AdamW::step in the same order, with IEEE-rounded sqrt and division
// (the library builds with --use_fast_math, which would approximate them).
__global__ void adamw_kernel(float* p, float* m, float* v, const float* g, const uint8_t* role, int64_t n,
                             AdamWScalars a) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n || role[i] == kRoleBuffer) return;
  const float gi = g[i];
  float pi = p[i];
  if (role[i] == kRoleDecayed) pi = __fmul_rn(pi, a.decay);
  const float mi = __fadd_rn(__fmul_rn(m[i], a.b1), __fmul_rn(gi, 1.f - a.b1));
  const float vi = __fadd_rn(__fmul_rn(v[i], a.b2), __fmul_rn(__fmul_rn(1.f - a.b2, gi), gi));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bc2_sqrt), a.eps);
  p[i] = __fadd_rn(pi, __fmul_rn(-a.step_size, __fdiv_rn(mi, denom)));
  m[i] = mi;
  v[i] = vi;
}

__device__ __forceinline__ bool is_nonfinite(float x) {
  // Exponent bits all ones: Inf or NaN (bit test: fast-math must not fold it away).
  return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u;
}

__global__ void flag_nonfinite_kernel(int* flag, const float* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n && is_nonfinite(x[i])) *flag = 1;  // every writer writes the same 1
}

}  // namespace

void cross_entropy_forward(float* loss, float* probs, const float* logits, const int64_t* labels,
                           const float* class_weights, float label_smoothing, int64_t B, int64_t K, Stream s) {
  MM_CHECK(B > 0 && K > 0, "cuda cross_entropy_forward: empty batch or no classes");
  double* row_terms = static_cast<double*>(reduction_scratch(3 * B * int64_t(sizeof(double))));
  const double eps = label_smoothing;
  cross_entropy_rows_kernel<<<grid_for(B, kThreads), kThreads, 0, s>>>(row_terms, probs, logits, labels,
                                                                        class_weights, eps, B, K);
  MM_CUDA_CHECK_LAUNCH("cross_entropy_rows_kernel");
  cross_entropy_total_kernel<<<1, 1, 0, s>>>(loss, row_terms, eps, B, K);
  MM_CUDA_CHECK_LAUNCH("cross_entropy_total_kernel");
}

void cross_entropy_backward(float* dlogits, const float* probs, const int64_t* labels, const float* class_weights,
                            float label_smoothing, float dloss, int64_t B, int64_t K, Stream s) {
  if (B <= 0 || K <= 0) return;
  cross_entropy_backward_kernel<<<grid_for(B * K, kThreads), kThreads, 0, s>>>(
      dlogits, probs, labels, class_weights, double(label_smoothing), dloss, B, K);
  MM_CUDA_CHECK_LAUNCH("cross_entropy_backward_kernel");
}

void grad_norm(float* norm, const float* g, const uint8_t* role, int64_t n, Stream s) {
  const int64_t parts = n > 0 ? (n + kNormBlockFloats - 1) / kNormBlockFloats : 0;
  double* part = static_cast<double*>(reduction_scratch(std::max<int64_t>(parts, 1) * int64_t(sizeof(double))));
  if (parts > 0) {
    grad_norm_partials_kernel<<<grid_for(parts, 1), kThreads, 0, s>>>(part, g, role, n);
    MM_CUDA_CHECK_LAUNCH("grad_norm_partials_kernel");
  }
  grad_norm_total_kernel<<<1, kThreads, 0, s>>>(norm, part, parts);
  MM_CUDA_CHECK_LAUNCH("grad_norm_total_kernel");
}

void clip_grads(float* g, const uint8_t* role, int64_t n, const float* norm, float max_norm, Stream s) {
  if (max_norm <= 0.f || n <= 0) return;
  clip_grads_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(g, role, n, norm, max_norm);
  MM_CUDA_CHECK_LAUNCH("clip_grads_kernel");
}

void adamw_step(float* p, float* m, float* v, const float* g, const uint8_t* role, int64_t n, const AdamWStep& a,
                Stream s) {
  MM_CHECK(a.t >= 1, "cuda adamw_step: the step count is 1-based");
  if (n <= 0) return;
  // As AdamW::step: the bias corrections in double, passed to the kernel as floats.
  const double bc1 = 1.0 - std::pow(double(a.beta1), double(a.t));
  const double bc2 = 1.0 - std::pow(double(a.beta2), double(a.t));
  const AdamWScalars k{a.beta1, a.beta2, a.eps, float(double(a.lr) / bc1), float(std::sqrt(bc2)),
                       1.f - a.lr * a.weight_decay};
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(p, m, v, g, role, n, k);
  MM_CUDA_CHECK_LAUNCH("adamw_kernel");
}

void flag_nonfinite(int* flag, const float* x, int64_t n, Stream s) {
  if (n <= 0) return;
  flag_nonfinite_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(flag, x, n);
  MM_CUDA_CHECK_LAUNCH("flag_nonfinite_kernel");
}

}  // namespace mm::cuda
