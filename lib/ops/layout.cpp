#include "ops/layout.h"

namespace mm {

void split_halves_forward(float* left, float* right, const float* x, int64_t P, int64_t c) {
#pragma omp parallel for
  for (int64_t p = 0; p < P; ++p)
    for (int64_t m = 0; m < c; ++m) {
      left[p * c + m] = x[p * 2 * c + m];
      right[p * c + m] = x[p * 2 * c + c + m];
    }
}

void split_halves_backward(float* dx, const float* dleft, const float* dright, int64_t P, int64_t c) {
#pragma omp parallel for
  for (int64_t p = 0; p < P; ++p)
    for (int64_t m = 0; m < c; ++m) {
      if (dleft) dx[p * 2 * c + m] += dleft[p * c + m];
      if (dright) dx[p * 2 * c + c + m] += dright[p * c + m];
    }
}

void concat_shuffle_forward(float* out, const float* l, const float* s, int64_t P, int64_t c) {
#pragma omp parallel for
  for (int64_t p = 0; p < P; ++p)
    for (int64_t m = 0; m < c; ++m) {
      out[p * 2 * c + 2 * m] = l[p * c + m];
      out[p * 2 * c + 2 * m + 1] = s[p * c + m];
    }
}

void concat_shuffle_backward(float* dl, float* ds, const float* dout, int64_t P, int64_t c) {
#pragma omp parallel for
  for (int64_t p = 0; p < P; ++p)
    for (int64_t m = 0; m < c; ++m) {
      if (dl) dl[p * c + m] += dout[p * 2 * c + 2 * m];
      if (ds) ds[p * c + m] += dout[p * 2 * c + 2 * m + 1];
    }
}

// Source row/column offsets of the four quadrant samples, in the reference's order.
static constexpr int kQuadDh[4] = {0, 1, 0, 1};
static constexpr int kQuadDw[4] = {0, 0, 1, 1};

void patch_gather_row(float* out, const float* x, int64_t q, int64_t H, int64_t W, int64_t C) {
  const int64_t Ho = H / 2, Wo = W / 2, j = q % Wo, i = (q / Wo) % Ho, b = q / (Wo * Ho);
  for (int k = 0; k < 4; ++k) {
    const float* src = x + ((b * H + 2 * i + kQuadDh[k]) * W + 2 * j + kQuadDw[k]) * C;
    for (int64_t c = 0; c < C; ++c) out[k * C + c] = src[c];
  }
}

void patch_gather_forward(float* out, const float* x, int64_t B, int64_t H, int64_t W, int64_t C) {
  const int64_t Q = B * (H / 2) * (W / 2);
#pragma omp parallel for
  for (int64_t q = 0; q < Q; ++q) patch_gather_row(out + q * 4 * C, x, q, H, W, C);
}

void patch_gather_backward(float* dx, const float* dout, int64_t B, int64_t H, int64_t W, int64_t C) {
  const int64_t Ho = H / 2, Wo = W / 2;
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Ho; ++i)
      for (int64_t j = 0; j < Wo; ++j) {
        const float* g = dout + ((b * Ho + i) * Wo + j) * 4 * C;
        for (int q = 0; q < 4; ++q) {
          float* d = dx + ((b * H + 2 * i + kQuadDh[q]) * W + 2 * j + kQuadDw[q]) * C;
          for (int64_t c = 0; c < C; ++c) d[c] += g[q * C + c];
        }
      }
}

void avgpool_forward(float* out, const float* x, int64_t B, int64_t P, int64_t C) {
#pragma omp parallel for
  for (int64_t b = 0; b < B; ++b) {
    float* o = out + b * C;
    for (int64_t c = 0; c < C; ++c) o[c] = 0.f;
    for (int64_t p = 0; p < P; ++p)
      for (int64_t c = 0; c < C; ++c) o[c] += x[(b * P + p) * C + c];
    for (int64_t c = 0; c < C; ++c) o[c] /= float(P);
  }
}

void avgpool_backward(float* dx, const float* dout, int64_t B, int64_t P, int64_t C) {
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t c = 0; c < C; ++c) dx[(b * P + p) * C + c] += dout[b * C + c] / float(P);
}

void nchw_to_nhwc(float* out, const float* x, int64_t B, int64_t C, int64_t H, int64_t W) {
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w)
        for (int64_t c = 0; c < C; ++c)
          out[((b * H + h) * W + w) * C + c] = x[((b * C + c) * H + h) * W + w];
}

void nhwc_to_nchw(float* out, const float* x, int64_t B, int64_t H, int64_t W, int64_t C) {
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
          out[((b * C + c) * H + h) * W + w] = x[((b * H + h) * W + w) * C + c];
}

}  // namespace mm
