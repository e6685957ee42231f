#include "ops/conv2d.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "ops/gemm.h"

namespace mm {

namespace {

// Target size of one chunk's im2col matrix. Small enough to stay in the L2/L3
// caches between im2col and sgemm, big enough that each sgemm call has a few
// hundred rows (OpenBLAS threads it over both cores).
constexpr int64_t kChunkFloats = int64_t(1) << 19;  // 2 MiB

void check_shape(const Conv2dShape& s) {
  MM_CHECK(s.B > 0 && s.H > 0 && s.W > 0 && s.Cin > 0 && s.Cout > 0 && s.KH > 0 && s.KW > 0 &&
               s.stride > 0 && s.pad >= 0 && s.out_h() > 0 && s.out_w() > 0,
           "conv2d: bad shape");
}

// Output rows (one row = OW pixels of one (b,oh)) handled per im2col chunk.
int64_t rows_per_chunk(const Conv2dShape& s) {
  const int64_t row_floats = s.out_w() * s.col_k();
  return std::clamp<int64_t>(kChunkFloats / row_floats, 1, s.B * s.out_h());
}

// The im2col columns are ordered (kh,kw,ci): every receptive-field row is a few
// contiguous runs of x, copied with vector moves. The GEMM then needs the weight
// with the same column order, (Cout,KH,KW,Cin); it is permuted into the workspace
// (Cout*K floats, small next to the im2col matrix). Without taps (1x1) or with
// one input channel the two orders coincide and the PyTorch weight is used as is.
bool needs_permute(const Conv2dShape& s) { return s.KH * s.KW > 1 && s.Cin > 1; }

// wp (Cout,KH,KW,Cin) <- w (Cout,Cin,KH,KW)
void permute_weight(float* wp, const float* w, const Conv2dShape& s) {
  const int64_t KK = s.KH * s.KW, K = s.col_k();
  for (int64_t co = 0; co < s.Cout; ++co)
    for (int64_t ci = 0; ci < s.Cin; ++ci)
      for (int64_t k = 0; k < KK; ++k) wp[co * K + k * s.Cin + ci] = w[co * K + ci * KK + k];
}

// dw (Cout,Cin,KH,KW) += dwp (Cout,KH,KW,Cin)
void add_unpermuted_weight(float* dw, const float* dwp, const Conv2dShape& s) {
  const int64_t KK = s.KH * s.KW, K = s.col_k();
  for (int64_t co = 0; co < s.Cout; ++co)
    for (int64_t ci = 0; ci < s.Cin; ++ci)
      for (int64_t k = 0; k < KK; ++k) dw[co * K + ci * KK + k] += dwp[co * K + k * s.Cin + ci];
}

// Input columns [iw0, iw1) that kernel columns kw = 0..KW-1 read for output column
// ow are iw = ow*stride - pad + kw: one contiguous run, clipped to the image.
struct Span {
  int64_t kw0, kw1;  // valid kernel columns
};
Span valid_kw(const Conv2dShape& s, int64_t ow) {
  const int64_t iw0 = ow * s.stride - s.pad;
  return {std::max<int64_t>(0, -iw0), std::min<int64_t>(s.KW, s.W - iw0)};
}

// col (rows r0..r1 of B*OH, each OW pixels; K columns ordered (kh,kw,ci)) <- x (B,H,W,Cin).
void im2col(float* col, const float* x, const Conv2dShape& s, int64_t r0, int64_t r1) {
  const int64_t OH = s.out_h(), OW = s.out_w(), K = s.col_k(), Cin = s.Cin;
  const int64_t kw_run = s.KW * Cin;  // floats per kernel row in a col row
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t ow = 0; ow < OW; ++ow) {
      const int64_t b = r / OH, oh = r % OH;
      const Span sp = valid_kw(s, ow);
      const int64_t iw0 = ow * s.stride - s.pad;
      float* dst = col + ((r - r0) * OW + ow) * K;
      for (int64_t kh = 0; kh < s.KH; ++kh, dst += kw_run) {
        const int64_t ih = oh * s.stride - s.pad + kh;
        if (ih < 0 || ih >= s.H || sp.kw0 >= sp.kw1) {
          std::fill(dst, dst + kw_run, 0.0f);
          continue;
        }
        std::fill(dst, dst + sp.kw0 * Cin, 0.0f);
        const float* src = x + ((b * s.H + ih) * s.W + iw0 + sp.kw0) * Cin;
        std::copy(src, src + (sp.kw1 - sp.kw0) * Cin, dst + sp.kw0 * Cin);
        std::fill(dst + sp.kw1 * Cin, dst + kw_run, 0.0f);
      }
    }
  }
}

// dx (B,H,W,Cin) += scatter of col (same layout as im2col's) back to the input pixels.
// Rows of the chunk are split over threads one kernel row kh at a time: for a fixed
// kh, distinct output rows write distinct input rows, so there are no races.
void col2im_add(float* dx, const float* col, const Conv2dShape& s, int64_t r0, int64_t r1) {
  const int64_t OH = s.out_h(), OW = s.out_w(), K = s.col_k(), Cin = s.Cin;
#pragma omp parallel
  for (int64_t kh = 0; kh < s.KH; ++kh) {
#pragma omp for schedule(static)
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / OH, oh = r % OH;
      const int64_t ih = oh * s.stride - s.pad + kh;
      if (ih < 0 || ih >= s.H) continue;
      for (int64_t ow = 0; ow < OW; ++ow) {
        const Span sp = valid_kw(s, ow);
        const int64_t n = (sp.kw1 - sp.kw0) * Cin;  // one contiguous run in both
        if (n <= 0) continue;
        const float* src = col + ((r - r0) * OW + ow) * K + (kh * s.KW + sp.kw0) * Cin;
        float* d = dx + ((b * s.H + ih) * s.W + ow * s.stride - s.pad + sp.kw0) * Cin;
        for (int64_t i = 0; i < n; ++i) d[i] += src[i];
      }
    }  // implicit barrier: the next kh starts after every row is done
  }
}

// out (rows,C) <- bias broadcast over rows.
void fill_rows(float* out, const float* bias, int64_t rows, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) std::copy(bias, bias + C, out + r * C);
}

// acc (C) += column sums of a (rows,C): per-thread float partials, combined in double.
void add_column_sums(float* acc, const float* a, int64_t rows, int64_t C) {
  const int nt = omp_get_max_threads();
  std::vector<float> partial(size_t(nt) * C, 0.0f);
#pragma omp parallel num_threads(nt)
  {
    float* p = partial.data() + size_t(omp_get_thread_num()) * C;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = a + r * C;
      for (int64_t c = 0; c < C; ++c) p[c] += row[c];
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0;
    for (int t = 0; t < nt; ++t) sum += partial[size_t(t) * C + c];
    acc[c] += float(sum);
  }
}

// Workspace layout: [ im2col chunk | permuted weight (Cout*K) | permuted dweight (Cout*K) ].
struct Workspace {
  float* col;
  float* wp;
  float* dwp;
};
Workspace split_workspace(float* ws, const Conv2dShape& s) {
  float* wp = ws + rows_per_chunk(s) * s.out_w() * s.col_k();
  return {ws, wp, wp + s.Cout * s.col_k()};
}

}  // namespace

int64_t conv2d_workspace_floats(const Conv2dShape& s) {
  check_shape(s);
  if (s.is_pointwise()) return 0;
  const int64_t im2col = rows_per_chunk(s) * s.out_w() * s.col_k() + (needs_permute(s) ? 2 * s.Cout * s.col_k() : 0);
  // Either Winograd choice (per-call or pre-transformed weights) fits.
  int64_t floats = im2col;
  for (bool transformed : {false, true})
    if (const int m = winograd_tile_for(s, transformed)) floats = std::max(floats, winograd_workspace_floats(s, m));
  return floats;
}

void conv2d_forward(float* out, const float* x, const float* weight, const float* bias,
                    const Conv2dShape& s, float* workspace) {
  check_shape(s);
  const int64_t OW = s.out_w(), K = s.col_k(), rows = s.B * s.out_h();
  const float beta = bias ? 1.0f : 0.0f;  // sgemm adds onto the bias rows
  if (bias) fill_rows(out, bias, rows * OW, s.Cout);

  if (s.is_pointwise()) {
    // out (P,Cout) = x (P,Cin) @ weight^T
    sgemm(false, true, rows * OW, s.Cout, K, 1.0f, x, K, weight, K, beta, out, s.Cout);
    return;
  }
  std::vector<float> own;
  if (!workspace) {
    own.resize(size_t(conv2d_workspace_floats(s)));
    workspace = own.data();
  }
  const Workspace ws = split_workspace(workspace, s);
  const float* w = weight;
  if (needs_permute(s)) {
    permute_weight(ws.wp, weight, s);
    w = ws.wp;
  }
  const int64_t chunk = rows_per_chunk(s);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk), P = (r1 - r0) * OW;
    im2col(ws.col, x, s, r0, r1);
    // out_chunk (P,Cout) = col (P,K) @ w^T (K,Cout)
    sgemm(false, true, P, s.Cout, K, 1.0f, ws.col, K, w, K, beta, out + r0 * OW * s.Cout, s.Cout);
  }
}

void conv2d_forward_eval(float* out, const float* x, const float* weight, const float* bias,
                         const Conv2dShape& s, float* workspace, const ConvEpilogue& e,
                         WinogradWeightCache* winograd_cache) {
  check_shape(s);
  if (const int m = winograd_tile_for(s, winograd_cache != nullptr)) {
    if (winograd_cache)
      conv3x3_winograd_forward_transformed(out, x, winograd_cache->get(weight, bias, s, m, e), s, m, workspace,
                                           e.relu);
    else
      conv3x3_winograd_forward(out, x, weight, bias, s, m, workspace, e);
    return;
  }
  conv2d_forward(out, x, weight, bias, s, workspace);
  if (!e.scale && !e.shift && !e.relu) return;
  // The same expressions as the eval BatchNorm + ReLU pass this replaces (one contraction,
  // the same ReLU), so that MM_WINOGRAD=0 gives the previous results bit for bit.
  const int64_t P = s.B * s.out_h() * s.out_w(), C = s.Cout;
  std::vector<float> ones, zeros;
  const float* scale = e.scale ? e.scale : (ones.assign(size_t(C), 1.0f), ones.data());
  const float* shift = e.shift ? e.shift : (zeros.assign(size_t(C), 0.0f), zeros.data());
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < P; ++p) {
    float* o = out + p * C;
    if (e.relu) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float v = o[c] * scale[c] + shift[c];
        o[c] = v > 0.f ? v : 0.f;
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) o[c] = o[c] * scale[c] + shift[c];
    }
  }
}

void conv2d_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, const Conv2dShape& s, float* workspace) {
  check_shape(s);
  const int64_t OW = s.out_w(), K = s.col_k(), rows = s.B * s.out_h();
  if (dbias) add_column_sums(dbias, dout, rows * OW, s.Cout);
  if (!dx && !dweight) return;

  if (s.is_pointwise()) {
    const int64_t P = rows * OW;
    // dweight (Cout,Cin) += dout^T (Cout,P) @ x (P,Cin)
    if (dweight) sgemm(true, false, s.Cout, K, P, 1.0f, dout, s.Cout, x, K, 1.0f, dweight, K);
    // dx (P,Cin) += dout (P,Cout) @ weight (Cout,Cin)
    if (dx) sgemm(false, false, P, K, s.Cout, 1.0f, dout, s.Cout, weight, K, 1.0f, dx, K);
    return;
  }
  std::vector<float> own;
  if (!workspace) {
    own.resize(size_t(conv2d_workspace_floats(s)));
    workspace = own.data();
  }
  const Workspace ws = split_workspace(workspace, s);
  const bool permute = needs_permute(s);
  const float* w = weight;
  if (dx && permute) {
    permute_weight(ws.wp, weight, s);
    w = ws.wp;
  }
  // dweight in im2col column order: the permuted buffer (zeroed) or dweight itself.
  float* dw = permute ? ws.dwp : dweight;
  if (dweight && permute) std::fill(dw, dw + s.Cout * K, 0.0f);

  const int64_t chunk = rows_per_chunk(s);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk), P = (r1 - r0) * OW;
    const float* dout_c = dout + r0 * OW * s.Cout;
    if (dweight) {
      im2col(ws.col, x, s, r0, r1);
      // dw (Cout,K) += dout_chunk^T (Cout,P) @ col (P,K)
      sgemm(true, false, s.Cout, K, P, 1.0f, dout_c, s.Cout, ws.col, K, 1.0f, dw, K);
    }
    if (dx) {
      // dcol (P,K) = dout_chunk (P,Cout) @ w (Cout,K), then scattered into dx
      sgemm(false, false, P, K, s.Cout, 1.0f, dout_c, s.Cout, w, K, 0.0f, ws.col, K);
      col2im_add(dx, ws.col, s, r0, r1);
    }
  }
  if (dweight && permute) add_unpermuted_weight(dweight, dw, s);
}

void fold_batchnorm_into_conv(std::vector<float>& folded_w, std::vector<float>& folded_b, const float* weight,
                              const float* bias, const float* scale, const float* shift, int64_t Cout, int64_t K) {
  folded_w.assign(weight, weight + Cout * K);
  folded_b.assign(size_t(Cout), 0.f);
  for (int64_t o = 0; o < Cout; ++o) {
    const float sc = scale ? scale[o] : 1.f;
    for (int64_t k = 0; k < K; ++k) folded_w[size_t(o * K + k)] *= sc;
    folded_b[size_t(o)] = (bias ? bias[o] : 0.f) * sc + (shift ? shift[o] : 0.f);
  }
}

}  // namespace mm
