#include "ops/depthwise_conv.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "ops/vector_math.h"

namespace mm {

namespace {

// taps (9,C) <- weight (C,1,3,3), tap k = kh*3+kw; flipped: tap k <- weight tap 8-k.
std::vector<float> taps_channels_last(const float* weight, int64_t C, bool flipped) {
  std::vector<float> taps(9 * C);
  for (int64_t c = 0; c < C; ++c)
    for (int k = 0; k < 9; ++k) taps[size_t((flipped ? 8 - k : k) * C + c)] = weight[c * 9 + k];
  return taps;
}

// fn(p, kh0, kh1, kw0, kw1) for every position p = (b·H + h)·W + w of a (B,H,W) grid, in
// parallel over rows, with the range of 3x3 taps [kh0,kh1) x [kw0,kw1) inside the image.
template <class Fn>
void for_each_position_3x3(int64_t B, int64_t H, int64_t W, Fn&& fn) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kh0 = h == 0 ? 1 : 0, kh1 = h == H - 1 ? 2 : 3;
      for (int64_t w = 0; w < W; ++w) {
        const int64_t kw0 = w == 0 ? 1 : 0, kw1 = w == W - 1 ? 2 : 3;
        fn((b * H + h) * W + w, kh0, kh1, kw0, kw1);
      }
    }
  }
}

// out (B,H,W,C) += depthwise 3x3 pad-1 correlation of in (B,H,W,C) with taps (9,C).
void dw3x3_accumulate(float* out, const float* in, const float* taps, int64_t B, int64_t H,
                      int64_t W, int64_t C) {
  for_each_position_3x3(B, H, W, [&](int64_t p, int64_t kh0, int64_t kh1, int64_t kw0, int64_t kw1) {
    float* o = out + p * C;
    for (int64_t kh = kh0; kh < kh1; ++kh) {
      for (int64_t kw = kw0; kw < kw1; ++kw) {
        const float* xi = in + (p + (kh - 1) * W + (kw - 1)) * C;
        const float* t = taps + (kh * 3 + kw) * C;
        for (int64_t c = 0; c < C; ++c) o[c] += xi[c] * t[c];
      }
    }
  });
}

}  // namespace

void dwconv3x3_forward(float* out, const float* x, const float* weight, const float* bias,
                       int64_t B, int64_t H, int64_t W, int64_t C) {
  const std::vector<float> taps = taps_channels_last(weight, C, false);
  const int64_t P = B * H * W;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < P; ++p) {
    if (bias) std::copy(bias, bias + C, out + p * C);
    else std::fill(out + p * C, out + (p + 1) * C, 0.0f);
  }
  dw3x3_accumulate(out, x, taps.data(), B, H, W, C);
}

namespace {

constexpr int64_t kSiluChunk = 32;  // channels summed in registers at once

// One position's channels [c0, c0+n) of dwconv3x3_silu_forward (n <= kSiluChunk; kN = n, or 0
// for a tail of run-time length), the sum in registers: bias, then the taps in
// dw3x3_accumulate's order (so the same roundings), then SiLU.
// kInterior: all 9 taps inside the image (constant bounds, so that gcc unrolls the taps
// and keeps acc in registers; with run-time bounds it stored acc to the stack every tap).
template <int64_t kN, bool kInterior>
inline void dw3x3_silu_chunk(float* u, const float* x, const float* taps, const float* bias,
                             int64_t C, int64_t W, int64_t c0, int64_t n, int64_t kh0, int64_t kh1, int64_t kw0,
                             int64_t kw1) {
  alignas(64) float acc[kSiluChunk];
  const int64_t len = kN > 0 ? kN : n;  // a constant trip count lets gcc keep acc in registers
  if constexpr (kInterior) kh0 = 0, kh1 = 3, kw0 = 0, kw1 = 3;
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) acc[j] = bias ? bias[c0 + j] : 0.0f;
  for (int64_t kh = kh0; kh < kh1; ++kh)
    for (int64_t kw = kw0; kw < kw1; ++kw) {
      const float* xi = x + ((kh - 1) * W + (kw - 1)) * C + c0;
      const float* t = taps + (kh * 3 + kw) * C + c0;
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) acc[j] += xi[j] * t[j];
    }
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) u[c0 + j] = silu_vectorisable(acc[j]);
}

template <bool kInterior>
void dw3x3_silu_position(float* up, const float* xp, const float* taps, const float* bias, int64_t C, int64_t W,
                         int64_t kh0, int64_t kh1, int64_t kw0, int64_t kw1) {
  int64_t c0 = 0;
  for (; c0 + kSiluChunk <= C; c0 += kSiluChunk)
    dw3x3_silu_chunk<kSiluChunk, kInterior>(up, xp, taps, bias, C, W, c0, kSiluChunk, kh0, kh1, kw0, kw1);
  if (c0 < C) dw3x3_silu_chunk<0, kInterior>(up, xp, taps, bias, C, W, c0, C - c0, kh0, kh1, kw0, kw1);
}

}  // namespace

void dwconv3x3_silu_forward(float* u, const float* x, const float* weight, const float* bias, int64_t B, int64_t H,
                            int64_t W, int64_t C, const std::function<void(int64_t, const float*)>& store) {
  const std::vector<float> taps = taps_channels_last(weight, C, false);
  for_each_position_3x3(B, H, W, [&](int64_t p, int64_t kh0, int64_t kh1, int64_t kw0, int64_t kw1) {
    float* up = u + p * C;
    if (kh0 == 0 && kh1 == 3 && kw0 == 0 && kw1 == 3)
      dw3x3_silu_position<true>(up, x + p * C, taps.data(), bias, C, W, kh0, kh1, kw0, kw1);
    else
      dw3x3_silu_position<false>(up, x + p * C, taps.data(), bias, C, W, kh0, kh1, kw0, kw1);
    if (store) store(p, up);
  });
}

void dwconv3x3_backward(float* dx, float* dweight, float* dbias, const float* dout,
                        const float* x, const float* weight, int64_t B, int64_t H, int64_t W,
                        int64_t C) {
  // dx[p] = sum_k dout[p - (k - centre)] * w[k]: a correlation with the flipped kernel.
  if (dx) {
    const std::vector<float> flipped = taps_channels_last(weight, C, true);
    dw3x3_accumulate(dx, dout, flipped.data(), B, H, W, C);
  }
  if (!dweight && !dbias) return;

  // dweight[c,k] = sum_p dout[p,c] * x[p + k - centre, c]; dbias[c] = sum_p dout[p,c].
  // Per-row float partials, added into per-thread double sums, combined at the end.
  const int nt = omp_get_max_threads();
  std::vector<double> sums(size_t(nt) * 10 * C, 0.0);  // per thread: 9 taps then bias, each (C)
#pragma omp parallel num_threads(nt)
  {
    double* acc = sums.data() + size_t(omp_get_thread_num()) * 10 * C;
    std::vector<float> row(10 * C);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        std::fill(row.begin(), row.end(), 0.0f);
        float* rb = row.data() + 9 * C;
        const int64_t kh0 = h == 0 ? 1 : 0, kh1 = h == H - 1 ? 2 : 3;
        for (int64_t w = 0; w < W; ++w) {
          const float* g = dout + ((b * H + h) * W + w) * C;
          for (int64_t c = 0; c < C; ++c) rb[c] += g[c];
          const int64_t kw0 = w == 0 ? 1 : 0, kw1 = w == W - 1 ? 2 : 3;
          for (int64_t kh = kh0; kh < kh1; ++kh) {
            for (int64_t kw = kw0; kw < kw1; ++kw) {
              const float* xi = x + ((b * H + h + kh - 1) * W + (w + kw - 1)) * C;
              float* r = row.data() + (kh * 3 + kw) * C;
              for (int64_t c = 0; c < C; ++c) r[c] += g[c] * xi[c];
            }
          }
        }
        for (int64_t i = 0; i < 10 * C; ++i) acc[i] += row[size_t(i)];
      }
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    for (int k = 0; k < 10; ++k) {
      double s = 0;
      for (int t = 0; t < nt; ++t) s += sums[size_t((int64_t(t) * 10 + k) * C + c)];
      if (k < 9) {
        if (dweight) dweight[c * 9 + k] += float(s);
      } else if (dbias) {
        dbias[c] += float(s);
      }
    }
  }
}

}  // namespace mm
