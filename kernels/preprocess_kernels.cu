// Model inputs from decoded images on the GPU: the twin of preprocess_into
// (lib/data/preprocess.cpp), one launch per pass over a whole batch of images of
// any sizes. See cuda_ops.h for the contract.
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace mm::cuda {

namespace {

// window_into's arithmetic (preprocess.cpp): [lo, hi] -> [0, 1] in double, clamped,
// NaN -> 0, rounded to float; a step where hi <= lo.
__device__ __forceinline__ float window_value(float v, double lo, double hi) {
  const double span = hi - lo;
  if (!(span > 0)) return double(v) > lo ? 1.f : 0.f;
  double t = (double(v) - lo) * (1.0 / span);
  t = t > 0.0 ? t : 0.0;
  return float(t < 1.0 ? t : 1.0);
}

// rows_done (S, W, c) = the vertical filter over the windowed image (H, W, c).
// One thread per output element; a block row of threads reads consecutive source
// elements, so the loads coalesce. grid: (elements, images).
__global__ void resize_rows_kernel(PreprocessArgs a) {
  const PreprocessItem it = a.items[blockIdx.y];
  const int64_t line = int64_t(it.width) * it.channels;
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= int64_t(a.side) * line) return;
  const int64_t yy = e / line, i = e % line;
  const float* src = a.pixels + it.pixels + int64_t(it.rows.first[yy]) * line + i;
  const double* k = it.rows.weights + yy * it.rows.stride;
  double sum = 0.0;
  for (int32_t j = 0; j < it.rows.count[yy]; ++j)
    sum += double(window_value(src[j * line], it.window_low, it.window_high)) * k[j];
  a.rows_done[it.rows_done + e] = float(sum);
}

// out (out_c, S, S) = normalise(channels(the horizontal filter over rows_done)).
// One thread per output pixel. grid: (S*S, images).
__global__ void resize_cols_normalise_kernel(PreprocessArgs a) {
  const PreprocessItem it = a.items[blockIdx.y];
  const int64_t plane = int64_t(a.side) * a.side;
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= plane) return;
  const int64_t yy = p / a.side, xx = p % a.side;
  const int c = it.channels;
  const float* row = a.rows_done + it.rows_done + (yy * it.width + it.cols.first[xx]) * c;
  const double* k = it.cols.weights + xx * it.cols.stride;
  float sized[3];
  for (int ch = 0; ch < c; ++ch) {
    double sum = 0.0;
    for (int32_t j = 0; j < it.cols.count[xx]; ++j) sum += double(row[j * c + ch]) * k[j];
    sized[ch] = float(sum);
  }
  float* out = a.out + int64_t(blockIdx.y) * a.out_channels * plane + p;
  for (int oc = 0; oc < a.out_channels; ++oc) {
    float v;
    if (c == 1) v = sized[0];
    else if (c == a.out_channels) v = sized[oc];
    else  // RGB -> grey for a 1-channel model: ITU-R 601-2 luma, as PIL's convert("L")
      v = __fadd_rn(__fadd_rn(__fmul_rn(0.299f, sized[0]), __fmul_rn(0.587f, sized[1])), __fmul_rn(0.114f, sized[2]));
    out[oc * plane] = __fmul_rn(__fsub_rn(v, a.mean[oc]), a.inv_std[oc]);
  }
}

}  // namespace

void preprocess_images(const PreprocessArgs& a, Stream s) {
  if (a.n == 0) return;
  MM_CHECK(a.n < 65536, "preprocess_images: more than 65,535 images in one launch");
  MM_CHECK(a.out_channels == 1 || a.out_channels == 3, "preprocess_images: 1 or 3 output channels");
  constexpr int kThreads = 256;
  resize_rows_kernel<<<dim3(grid_for(a.max_rows_done, kThreads), unsigned(a.n)), kThreads, 0, s>>>(a);
  MM_CUDA_CHECK_LAUNCH("resize_rows_kernel");
  resize_cols_normalise_kernel<<<dim3(grid_for(int64_t(a.side) * a.side, kThreads), unsigned(a.n)), kThreads, 0,
                                 s>>>(a);
  MM_CUDA_CHECK_LAUNCH("resize_cols_normalise_kernel");
}

}  // namespace mm::cuda
