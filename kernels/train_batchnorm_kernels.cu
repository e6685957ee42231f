// BatchNorm training kernels (float32), mirroring lib/ops/batchnorm.cpp: train-mode forward
// (batch statistics, running-statistic update), the output recomputed from saved statistics,
// eval mode, and backward, each optionally with the ReLU after the BatchNorm. The statistics
// and gradients are norm_channel_sums.cuh's deterministic per-channel sums.
#include "norm_channel_sums.cuh"

namespace mm::cuda {

namespace {

constexpr float kMomentum = 0.1f;

__device__ __forceinline__ float gamma_of(const float* weight, int64_t c) { return weight ? weight[c] : 1.f; }

// In the BatchNorm terms x's rows are ldx floats apart, dout's C.
struct SumTerm {  // a1 += x
  const float* x;
  int64_t ldx;
  __device__ void operator()(int64_t r, int64_t c, float& a1, float&) const { a1 += x[r * ldx + c]; }
};

struct CentredSquareTerm {  // a1 += (x - mean)^2
  const float *x, *mean;
  int64_t ldx;
  __device__ void operator()(int64_t r, int64_t c, float& a1, float&) const {
    const float d = x[r * ldx + c] - mean[c];
    a1 += d * d;
  }
};

// A BatchNorm's output at one element: one expression for scale_shift_kernel and ReluMask, so
// that the mask sees the forward's bits by construction.
__device__ __forceinline__ float batchnorm_affine(float x, const float* scale, const float* shift, int64_t c) {
  return x * scale[c] + shift[c];
}

// The ReLU after a BatchNorm, in its backward: dout passes where the forward's output
// x·scale + shift (batchnorm_affine, as scale_shift_kernel computes it) was positive, as
// relu_backward on that output would pass it. scale nullptr: no ReLU.
struct ReluMask {
  const float *scale = nullptr, *shift = nullptr;
  __device__ __forceinline__ float operator()(float g, float x, int64_t c) const {
    if (!scale) return g;
    return batchnorm_affine(x, scale, shift, c) > 0.f ? g : 0.f;
  }
};

struct GradTerm {  // a1 += dout, a2 += dout*(x - centre), dout through the ReLU mask
  const float *dout, *x, *centre;
  int64_t C, ldx;
  ReluMask relu;
  __device__ void operator()(int64_t r, int64_t c, float& a1, float& a2) const {
    const float xv = x[r * ldx + c];
    const float g = relu(dout[r * C + c], xv, c);
    a1 += g;
    a2 += g * (xv - centre[c]);
  }
};

struct StoreMean {
  float* mean;
  int64_t N;
  __device__ void operator()(int64_t c, double s1, double) const { mean[c] = float(s1 / double(N)); }
};

// From the centred squares: rstd, the affine scale/shift of the output, the running statistics.
// The affine map of a train-mode BatchNorm from its batch statistics; one expression for the
// forward and for batchnorm_forward_saved, so that a recomputed output has the same bits.
__device__ __forceinline__ void train_scale_shift(float* scale, float* shift, const float* weight, const float* bias,
                                                  const float* mean, const float* rstd, int64_t c) {
  scale[c] = gamma_of(weight, c) * rstd[c];
  shift[c] = (bias ? bias[c] : 0.f) - mean[c] * scale[c];
}

struct FinishTrainStats {
  float *rstd, *scale, *shift, *running_mean, *running_var;
  const float *mean, *weight, *bias;
  int64_t N;
  __device__ void operator()(int64_t c, double sq, double) const {
    const double var = sq / double(N);  // biased: used to normalise
    rstd[c] = float(1.0 / sqrt(var + double(kEps)));
    train_scale_shift(scale, shift, weight, bias, mean, rstd, c);
    if (running_mean && running_var) {
      const double unbiased = sq / double(N - 1);
      running_mean[c] = float((1.0 - kMomentum) * running_mean[c] + kMomentum * double(mean[c]));
      running_var[c] = float((1.0 - kMomentum) * running_var[c] + kMomentum * unbiased);
    }
  }
};

__device__ __forceinline__ float eval_rstd(const float* running_var, int64_t c) {
  return float(1.0 / sqrt(double(running_var[c]) + double(kEps)));
}

__global__ void saved_scale_shift_kernel(float* scale, float* shift, const float* mean, const float* rstd,
                                         const float* weight, const float* bias, int64_t C) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < C) train_scale_shift(scale, shift, weight, bias, mean, rstd, c);
}

__global__ void eval_scale_shift_kernel(float* scale, float* shift, const float* running_mean,
                                        const float* running_var, const float* weight, const float* bias,
                                        int64_t C) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  scale[c] = gamma_of(weight, c) * eval_rstd(running_var, c);
  shift[c] = (bias ? bias[c] : 0.f) - running_mean[c] * scale[c];
}

// out (n / C, C) = x * scale[c] + shift[c], then max(0, ·) with kRelu, as T (float, or bf16
// rounded to nearest even); x's rows ldx floats apart; n < 2^31 (for_row_chunks).
template <bool kRelu, class T>
__global__ void scale_shift_kernel(T* out, const float* x, int64_t ldx, const float* scale, const float* shift,
                                   uint32_t n, FastDivmod C) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t r = C.div(i), c = C.mod(i, r);
  const float v = batchnorm_affine(x[int64_t(r) * ldx + c], scale, shift, c);
  out[i] = from_f32<T>(kRelu ? relu_f(v) : v);
}
template <class T>
void scale_shift(T* out, const float* x, int64_t ldx, const float* scale, const float* shift, int64_t N, int64_t C,
                 bool relu, Stream s) {
  for_row_chunks(N, C, [&](int64_t r0, int64_t rows) {
    const uint32_t n = uint32_t(rows * C);
    auto* kernel = relu ? scale_shift_kernel<true, T> : scale_shift_kernel<false, T>;
    kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(out + r0 * C, x + r0 * ldx, ldx, scale, shift, n,
                                                      FastDivmod(uint32_t(C)));
    MM_CUDA_CHECK_LAUNCH("scale_shift_kernel");
  });
}

// dx (n / C, C) += g * a[c] + x * b[c] + d[c], g = dout through the ReLU mask; b, d nullptr
// for zero; dx's and x's rows ld floats apart, dout's C; n < 2^31. dx16 (packed, or nullptr):
// the same dx rounded to bf16.
__global__ void add_affine2_kernel(float* dx, __nv_bfloat16* dx16, const float* dout, const float* x, int64_t ld,
                                   const float* a, const float* b, const float* d, ReluMask relu, uint32_t n,
                                   FastDivmod C, bool overwrite) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t r = C.div(i), c = C.mod(i, r);
  const int64_t j = int64_t(r) * ld + c;
  const float xv = b || relu.scale ? x[j] : 0.f, g = relu(dout[i], xv, c);
  const float v = b ? g * a[c] + xv * b[c] + d[c] : g * a[c];
  const float o = overwrite ? v : dx[j] + v;
  dx[j] = o;
  if (dx16) dx16[i] = __float2bfloat16_rn(o);
}

// With xhat = (x-mean)*rstd: dx = a*dout + b*x + d, a = gamma*rstd, b = -gamma*rstd^3*sum_gx/N,
// d = -a*sum_g/N - b*mean; also the parameter gradients.
struct FinishTrainBackward {
  float *dweight, *dbias, *a, *b, *d;  // a, b, d nullptr when dx is not wanted
  const float *weight, *mean, *rstd;
  int64_t N;
  __device__ void operator()(int64_t c, double sum_g, double sum_gx) const {
    if (dbias) dbias[c] += float(sum_g);
    if (dweight) dweight[c] += float(sum_gx * rstd[c]);
    if (!a) return;
    const double rs = rstd[c], ga = double(gamma_of(weight, c)) * rs;
    const double gb = -double(gamma_of(weight, c)) * rs * rs * rs * sum_gx / double(N);
    a[c] = float(ga);
    b[c] = float(gb);
    d[c] = float(-ga * sum_g / double(N) - gb * double(mean[c]));
  }
};

__global__ void eval_dx_scale_kernel(float* a, const float* running_var, const float* weight, int64_t C) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < C) a[c] = gamma_of(weight, c) * eval_rstd(running_var, c);
}

struct FinishEvalParamGrads {
  float *dweight, *dbias;
  const float* running_var;
  __device__ void operator()(int64_t c, double sum_g, double sum_gx) const {
    if (dbias) dbias[c] += float(sum_g);
    if (dweight) dweight[c] += float(sum_gx * double(eval_rstd(running_var, c)));
  }
};

void launch_add_affine2(float* dx, uint16_t* dx_bf16, const float* dout, const float* x, int64_t ld, const float* a,
                        const float* b, const float* d, ReluMask relu, int64_t N, int64_t C, GradOut out, Stream s) {
  auto* dx16 = reinterpret_cast<__nv_bfloat16*>(dx_bf16);
  for_row_chunks(N, C, [&](int64_t r0, int64_t rows) {
    const uint32_t n = uint32_t(rows * C);
    add_affine2_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(dx + r0 * ld, dx16 ? dx16 + r0 * C : nullptr,
                                                                   dout + r0 * C, x + r0 * ld, ld, a, b, d, relu, n,
                                                                   FastDivmod(uint32_t(C)), out == GradOut::Overwrite);
    MM_CUDA_CHECK_LAUNCH("add_affine2_kernel");
  });
}


}  // namespace

// Batch statistics into mean and rstd, the running ones updated, and the map x·scale + shift.
// Two passes (mean, then centred squares) for a variance free of cancellation.
static void train_statistics(const ChannelScratch& sc, float* scale, float* shift, float* mean, float* rstd,
                             float* running_mean, float* running_var, const float* x, const float* weight,
                             const float* bias, int64_t N, int64_t C, Stream s, int64_t ld) {
  const int64_t ldx = row_stride(ld, C, "batchnorm_forward_train");
  channel_sums(sc, N, C, SumTerm{x, ldx}, StoreMean{mean, N}, s);
  channel_sums(sc, N, C, CentredSquareTerm{x, mean, ldx},
               FinishTrainStats{rstd, scale, shift, running_mean, running_var, mean, weight, bias, N}, s);
}

void batchnorm_forward_train(float* out, float* mean, float* rstd, float* running_mean, float* running_var,
                             const float* x, const float* weight, const float* bias, int64_t N, int64_t C, Stream s,
                             bool relu, int64_t ld) {
  MM_CHECK(N > 1, "cuda batchnorm_forward_train: need more than one value per channel");
  const ChannelScratch sc = take_scratch(N, C, 2);
  float *scale = sc.rows, *shift = sc.rows + C;
  train_statistics(sc, scale, shift, mean, rstd, running_mean, running_var, x, weight, bias, N, C, s, ld);
  scale_shift(out, x, row_stride(ld, C, "batchnorm_forward_train"), scale, shift, N, C, relu, s);
}

void batchnorm_train_map(float* scale, float* shift, float* mean, float* rstd, float* running_mean,
                         float* running_var, const float* x, const float* weight, const float* bias, int64_t N,
                         int64_t C, Stream s, int64_t ld) {
  MM_CHECK(N > 1, "cuda batchnorm_train_map: need more than one value per channel");
  train_statistics(take_scratch(N, C, 0), scale, shift, mean, rstd, running_mean, running_var, x, weight, bias, N, C,
                   s, ld);
}

void batchnorm_saved_map(float* scale, float* shift, const float* mean, const float* rstd, const float* weight,
                         const float* bias, int64_t C, Stream s) {
  saved_scale_shift_kernel<<<grid_for(C, kThreads), kThreads, 0, s>>>(scale, shift, mean, rstd, weight, bias, C);
  MM_CUDA_CHECK_LAUNCH("saved_scale_shift_kernel");
}

void batchnorm_eval_map(float* scale, float* shift, const float* running_mean, const float* running_var,
                        const float* weight, const float* bias, int64_t C, Stream s) {
  eval_scale_shift_kernel<<<grid_for(C, kThreads), kThreads, 0, s>>>(scale, shift, running_mean, running_var,
                                                                      weight, bias, C);
  MM_CUDA_CHECK_LAUNCH("eval_scale_shift_kernel");
}

void batchnorm_forward_saved(float* out, const float* x, const float* mean, const float* rstd, const float* weight,
                             const float* bias, int64_t N, int64_t C, Stream s, bool relu, int64_t ld) {
  if (N <= 0) return;
  const int64_t ldx = row_stride(ld, C, "batchnorm_forward_saved");
  const ChannelScratch sc = take_scratch(0, C, 2);
  float *scale = sc.rows, *shift = sc.rows + C;
  batchnorm_saved_map(scale, shift, mean, rstd, weight, bias, C, s);
  scale_shift(out, x, ldx, scale, shift, N, C, relu, s);
}

void batchnorm_apply_bf16(uint16_t* out, const float* x, const float* scale, const float* shift, int64_t N, int64_t C,
                          Stream s, bool relu, int64_t ld) {
  if (N <= 0) return;
  scale_shift(reinterpret_cast<__nv_bfloat16*>(out), x, row_stride(ld, C, "batchnorm_apply_bf16"), scale, shift, N, C,
              relu, s);
}

void batchnorm_forward_eval(float* out, const float* x, const float* running_mean, const float* running_var,
                            const float* weight, const float* bias, int64_t N, int64_t C, Stream s, bool relu,
                            int64_t ld) {
  if (N <= 0) return;
  const int64_t ldx = row_stride(ld, C, "batchnorm_forward_eval");
  const ChannelScratch sc = take_scratch(0, C, 2);
  float *scale = sc.rows, *shift = sc.rows + C;
  batchnorm_eval_map(scale, shift, running_mean, running_var, weight, bias, C, s);
  scale_shift(out, x, ldx, scale, shift, N, C, relu, s);
}

void batchnorm_backward_train(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                              const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C,
                              Stream s, GradOut out, const BatchNormRelu& relu, int64_t ld, uint16_t* dx_bf16) {
  if (N <= 0 || (!dx && !dweight && !dbias)) return;
  MM_CHECK(!dx_bf16 || dx, "batchnorm_backward_train: dx_bf16 is a copy of dx");
  const int64_t ldx = row_stride(ld, C, "batchnorm_backward_train");
  const ChannelScratch sc = take_scratch(N, C, 5);
  float *a = dx ? sc.rows : nullptr, *b = sc.rows + C, *d = sc.rows + 2 * C;
  ReluMask mask;
  if (relu.on) {  // the forward's affine map, as batchnorm_forward_saved makes it
    float *scale = sc.rows + 3 * C, *shift = sc.rows + 4 * C;
    saved_scale_shift_kernel<<<grid_for(C, kThreads), kThreads, 0, s>>>(scale, shift, mean, rstd, weight, relu.bias, C);
    MM_CUDA_CHECK_LAUNCH("saved_scale_shift_kernel");
    mask = ReluMask{scale, shift};
  }
  channel_sums(sc, N, C, GradTerm{dout, x, mean, C, ldx, mask},
               FinishTrainBackward{dweight, dbias, a, b, d, weight, mean, rstd, N}, s);
  if (dx) launch_add_affine2(dx, dx_bf16, dout, x, ldx, a, b, d, mask, N, C, out, s);
}

void batchnorm_backward_eval(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                             const float* running_mean, const float* running_var, const float* weight, int64_t N,
                             int64_t C, Stream s, GradOut out, const BatchNormRelu& relu, int64_t ld,
                             uint16_t* dx_bf16) {
  if (N <= 0) return;
  MM_CHECK(!dx_bf16 || dx, "batchnorm_backward_eval: dx_bf16 is a copy of dx");
  const int64_t ldx = row_stride(ld, C, "batchnorm_backward_eval");
  const ChannelScratch sc = take_scratch(N, C, 3);
  ReluMask mask;
  if (relu.on) {
    float *scale = sc.rows + C, *shift = sc.rows + 2 * C;
    eval_scale_shift_kernel<<<grid_for(C, kThreads), kThreads, 0, s>>>(scale, shift, running_mean, running_var,
                                                                        weight, relu.bias, C);
    MM_CUDA_CHECK_LAUNCH("eval_scale_shift_kernel");
    mask = ReluMask{scale, shift};
  }
  if (dweight || dbias)
    channel_sums(sc, N, C, GradTerm{dout, x, running_mean, C, ldx, mask},
                 FinishEvalParamGrads{dweight, dbias, running_var}, s);
  if (!dx) return;
  eval_dx_scale_kernel<<<grid_for(C, kThreads), kThreads, 0, s>>>(sc.rows, running_var, weight, C);
  MM_CUDA_CHECK_LAUNCH("eval_dx_scale_kernel");
  launch_add_affine2(dx, dx_bf16, dout, x, ldx, sc.rows, nullptr, nullptr, mask, N, C, out, s);
}
}  // namespace mm::cuda
