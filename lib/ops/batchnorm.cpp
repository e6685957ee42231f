#include "ops/batchnorm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace mm {

namespace {

constexpr int64_t kRowBlock = 64;  // rows summed in float before adding into double

// Per-channel sums over the N rows, two at a time:
//   s1[c] = sum_r f1(r,c),  s2[c] = sum_r f2(r,c)
// where term(r, a1, a2) adds row r's contributions into the float rows a1, a2 (C).
// Blocks of kRowBlock rows are summed in float (vectorised over channels) and the
// block results added into per-thread double sums, so accuracy does not degrade
// with N; the per-thread sums are combined in a fixed order (deterministic).
template <class Term>
void channel_sums(double* s1, double* s2, int64_t N, int64_t C, Term term) {
  const int nt = omp_get_max_threads();
  std::vector<double> part(size_t(nt) * 2 * C, 0.0);
#pragma omp parallel num_threads(nt)
  {
    double* p1 = part.data() + size_t(omp_get_thread_num()) * 2 * C;
    double* p2 = p1 + C;
    std::vector<float> a1(C), a2(C);
#pragma omp for schedule(static)
    for (int64_t r0 = 0; r0 < N; r0 += kRowBlock) {
      std::fill(a1.begin(), a1.end(), 0.0f);
      std::fill(a2.begin(), a2.end(), 0.0f);
      for (int64_t r = r0; r < std::min(N, r0 + kRowBlock); ++r) term(r, a1.data(), a2.data());
      for (int64_t c = 0; c < C; ++c) { p1[c] += a1[size_t(c)]; p2[c] += a2[size_t(c)]; }
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    double t1 = 0, t2 = 0;
    for (int t = 0; t < nt; ++t) { t1 += part[size_t(t) * 2 * C + c]; t2 += part[size_t(t) * 2 * C + C + c]; }
    s1[c] = t1;
    s2[c] = t2;
  }
}

// out (N,C) = x * scale[c] + shift[c]
void scale_shift(float* out, const float* x, const float* scale, const float* shift, int64_t N,
                 int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const float* xr = x + r * C;
    float* o = out + r * C;
    for (int64_t c = 0; c < C; ++c) o[c] = xr[c] * scale[c] + shift[c];
  }
}

// dx (N,C) += dout * a[c] + x * b[c] + d[c]
void add_affine2(float* dx, const float* dout, const float* x, const float* a, const float* b,
                 const float* d, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const float* g = dout + r * C;
    const float* xr = x + r * C;
    float* o = dx + r * C;
    for (int64_t c = 0; c < C; ++c) o[c] += g[c] * a[c] + xr[c] * b[c] + d[c];
  }
}

float gamma_of(const float* weight, int64_t c) { return weight ? weight[c] : 1.0f; }

}  // namespace

void batchnorm_forward_train(float* out, float* mean, float* rstd, float* running_mean,
                             float* running_var, const float* x, const float* weight,
                             const float* bias, int64_t N, int64_t C, float eps, float momentum,
                             const BatchNormSync* sync) {
  // Two passes (mean, then centred squares) for a variance free of cancellation. Synchronised,
  // each pass's sums (and the row count) are summed over the processes.
  std::vector<double> sum(size_t(C) + 1), sq(C), unused(C);
  channel_sums(sum.data(), unused.data(), N, C, [&](int64_t r, float* a1, float*) {
    const float* xr = x + r * C;
    for (int64_t c = 0; c < C; ++c) a1[c] += xr[c];
  });
  sum[size_t(C)] = double(N);
  if (sync) (*sync)(sum.data(), C + 1);
  const double rows = sum[size_t(C)];
  MM_CHECK(rows > 1, "batchnorm_forward_train: need more than one value per channel");
  for (int64_t c = 0; c < C; ++c) mean[c] = float(sum[size_t(c)] / rows);
  channel_sums(sq.data(), unused.data(), N, C, [&](int64_t r, float* a1, float*) {
    const float* xr = x + r * C;
    for (int64_t c = 0; c < C; ++c) { const float d = xr[c] - mean[c]; a1[c] += d * d; }
  });
  if (sync) (*sync)(sq.data(), C);

  std::vector<float> scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    const double var = sq[size_t(c)] / rows;  // biased: used to normalise
    rstd[c] = float(1.0 / std::sqrt(var + double(eps)));
    scale[size_t(c)] = gamma_of(weight, c) * rstd[c];
    shift[size_t(c)] = (bias ? bias[c] : 0.0f) - mean[c] * scale[size_t(c)];
    if (running_mean && running_var) {
      const double unbiased = sq[size_t(c)] / (rows - 1);
      running_mean[c] = float((1.0 - momentum) * running_mean[c] + momentum * double(mean[c]));
      running_var[c] = float((1.0 - momentum) * running_var[c] + momentum * unbiased);
    }
  }
  scale_shift(out, x, scale.data(), shift.data(), N, C);
}

void batchnorm_eval_affine(float* scale, float* shift, const float* running_mean, const float* running_var,
                           const float* weight, const float* bias, int64_t C, float eps) {
  for (int64_t c = 0; c < C; ++c) {
    const float rs = float(1.0 / std::sqrt(double(running_var[c]) + double(eps)));
    scale[c] = gamma_of(weight, c) * rs;
    shift[c] = (bias ? bias[c] : 0.0f) - running_mean[c] * scale[c];
  }
}

void batchnorm_forward_eval(float* out, const float* x, const float* running_mean,
                            const float* running_var, const float* weight, const float* bias,
                            int64_t N, int64_t C, float eps) {
  std::vector<float> scale(C), shift(C);
  batchnorm_eval_affine(scale.data(), shift.data(), running_mean, running_var, weight, bias, C, eps);
  scale_shift(out, x, scale.data(), shift.data(), N, C);
}

void batchnorm_backward_train(float* dx, float* dweight, float* dbias, const float* dout,
                              const float* x, const float* weight, const float* mean,
                              const float* rstd, int64_t N, int64_t C, const BatchNormSync* sync) {
  // With xhat = (x-mean)*rstd:  dbias = sum dout,  dweight = sum dout*xhat,
  //   dx = gamma*rstd * (dout - mean(dout) - xhat * mean(dout*xhat)).
  std::vector<double> sum_g(C), sum_gx(C);  // sum dout, sum dout*(x-mean)
  channel_sums(sum_g.data(), sum_gx.data(), N, C, [&](int64_t r, float* a1, float* a2) {
    const float* g = dout + r * C;
    const float* xr = x + r * C;
    for (int64_t c = 0; c < C; ++c) { a1[c] += g[c]; a2[c] += g[c] * (xr[c] - mean[c]); }
  });
  if (dbias)
    for (int64_t c = 0; c < C; ++c) dbias[c] += float(sum_g[size_t(c)]);
  if (dweight)
    for (int64_t c = 0; c < C; ++c) dweight[c] += float(sum_gx[size_t(c)] * rstd[c]);
  double rows = double(N);
  if (sync) {  // dx needs the means over the global batch
    std::vector<double> all(size_t(2 * C) + 1);
    std::copy(sum_g.begin(), sum_g.end(), all.begin());
    std::copy(sum_gx.begin(), sum_gx.end(), all.begin() + C);
    all[size_t(2 * C)] = double(N);
    (*sync)(all.data(), 2 * C + 1);
    std::copy(all.begin(), all.begin() + C, sum_g.begin());
    std::copy(all.begin() + C, all.begin() + 2 * C, sum_gx.begin());
    rows = all[size_t(2 * C)];
  }
  if (!dx) return;
  // dx = a*dout + b*x + d with a = gamma*rstd, b = -gamma*rstd^3*sum_gx/N,
  // d = -a*sum_g/N - b*mean.
  std::vector<float> a(C), b(C), d(C);
  for (int64_t c = 0; c < C; ++c) {
    const double rs = rstd[c], ga = double(gamma_of(weight, c)) * rs;
    const double gb = -double(gamma_of(weight, c)) * rs * rs * rs * sum_gx[size_t(c)] / rows;
    a[size_t(c)] = float(ga);
    b[size_t(c)] = float(gb);
    d[size_t(c)] = float(-ga * sum_g[size_t(c)] / rows - gb * double(mean[c]));
  }
  add_affine2(dx, dout, x, a.data(), b.data(), d.data(), N, C);
}

void batchnorm_backward_eval(float* dx, float* dweight, float* dbias, const float* dout,
                             const float* x, const float* running_mean, const float* running_var,
                             const float* weight, int64_t N, int64_t C, float eps) {
  std::vector<float> rs(C);
  for (int64_t c = 0; c < C; ++c) rs[size_t(c)] = float(1.0 / std::sqrt(double(running_var[c]) + double(eps)));
  if (dweight || dbias) {
    std::vector<double> sum_g(C), sum_gx(C);
    channel_sums(sum_g.data(), sum_gx.data(), N, C, [&](int64_t r, float* a1, float* a2) {
      const float* g = dout + r * C;
      const float* xr = x + r * C;
      for (int64_t c = 0; c < C; ++c) { a1[c] += g[c]; a2[c] += g[c] * (xr[c] - running_mean[c]); }
    });
    for (int64_t c = 0; c < C; ++c) {
      if (dbias) dbias[c] += float(sum_g[size_t(c)]);
      if (dweight) dweight[c] += float(sum_gx[size_t(c)] * rs[size_t(c)]);
    }
  }
  if (!dx) return;
  std::vector<float> a(C), zero(size_t(C), 0.0f);
  for (int64_t c = 0; c < C; ++c) a[size_t(c)] = gamma_of(weight, c) * rs[size_t(c)];
  add_affine2(dx, dout, x, a.data(), zero.data(), zero.data(), N, C);
}

void batchnorm_fold_into_conv(float* conv_weight, float* conv_bias, int64_t Cout, int64_t fan_in,
                              const float* bn_weight, const float* bn_bias,
                              const float* running_mean, const float* running_var, float eps) {
  for (int64_t co = 0; co < Cout; ++co) {
    const float s = float(double(gamma_of(bn_weight, co)) / std::sqrt(double(running_var[co]) + double(eps)));
    for (int64_t i = 0; i < fan_in; ++i) conv_weight[co * fan_in + i] *= s;
    conv_bias[co] = (conv_bias[co] - running_mean[co]) * s + (bn_bias ? bn_bias[co] : 0.0f);
  }
}

}  // namespace mm
