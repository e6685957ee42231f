#include "ops/layernorm.h"

#include <cmath>
#include <vector>

#include <omp.h>

namespace mm {

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t N, int64_t C, float eps) {
#pragma omp parallel for
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    float* o = out + n * C;
    float m = 0.f;
    for (int64_t c = 0; c < C; ++c) m += xr[c];
    m /= float(C);
    float v = 0.f;
    for (int64_t c = 0; c < C; ++c) v += (xr[c] - m) * (xr[c] - m);
    const float r = 1.f / std::sqrt(v / float(C) + eps);
    for (int64_t c = 0; c < C; ++c) o[c] = (xr[c] - m) * r * weight[c] + bias[c];
    if (mean) mean[n] = m;
    if (rstd) rstd[n] = r;
  }
}

void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* weight, const float* mean, const float* rstd, int64_t N,
                        int64_t C) {
  // Per-thread partial sums for the parameter grads, reduced at the end: no atomics.
  const int T = omp_get_max_threads();
  std::vector<float> part(size_t(T) * 2 * C, 0.f);
#pragma omp parallel
  {
    float* pw = part.data() + size_t(omp_get_thread_num()) * 2 * C;
    float* pb = pw + C;
#pragma omp for
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      const float* g = dout + n * C;
      const float m = mean[n], r = rstd[n];
      float sum_g = 0.f, sum_gx = 0.f;  // sums of dxhat and dxhat*xhat
      for (int64_t c = 0; c < C; ++c) {
        const float xhat = (xr[c] - m) * r;
        const float dxhat = g[c] * weight[c];
        sum_g += dxhat;
        sum_gx += dxhat * xhat;
        pw[c] += g[c] * xhat;
        pb[c] += g[c];
      }
      if (dx) {
        const float inv_c = 1.f / float(C);
        for (int64_t c = 0; c < C; ++c) {
          const float xhat = (xr[c] - m) * r;
          dx[n * C + c] += r * (g[c] * weight[c] - inv_c * (sum_g + xhat * sum_gx));
        }
      }
    }
  }
  for (int t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      if (dweight) dweight[c] += part[size_t(t) * 2 * C + c];
      if (dbias) dbias[c] += part[size_t(t) * 2 * C + C + c];
    }
}

}  // namespace mm
