#include "ops/winograd.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "ops/conv2d.h"
#include "ops/gemm.h"

namespace mm {

namespace {

// The 1-D transforms of F(m,3) (Lavin & Gray 2015), each applied to n channels at once:
// the 2-D ones are a pass along the tile's rows then one along its columns.
//   input:  v = B^T d   (a values -> a)
//   output: y = A^T w   (a values -> m)
//   weight: u = G g     (3 values -> a)
template <int M>
struct F;

template <>
struct F<2> {
  static void input(const float* const* d, float* const* v, int64_t n) {
    const float *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3];
    float *v0 = v[0], *v1 = v[1], *v2 = v[2], *v3 = v[3];
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      v0[c] = d0[c] - d2[c];
      v1[c] = d1[c] + d2[c];
      v2[c] = d2[c] - d1[c];
      v3[c] = d1[c] - d3[c];
    }
  }
  static void output(const float* const* w, float* const* y, int64_t n) {
    const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    float *y0 = y[0], *y1 = y[1];
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      y0[c] = w0[c] + w1[c] + w2[c];
      y1[c] = w1[c] - w2[c] - w3[c];
    }
  }
  static void weight(const float* const* g, float* const* u, int64_t n) {
    const float *g0 = g[0], *g1 = g[1], *g2 = g[2];
    float *u0 = u[0], *u1 = u[1], *u2 = u[2], *u3 = u[3];
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      const float h = 0.5f * (g0[c] + g2[c]), d = 0.5f * g1[c];
      u0[c] = g0[c];
      u1[c] = h + d;
      u2[c] = h - d;
      u3[c] = g2[c];
    }
  }
};

template <>
struct F<4> {
  static void input(const float* const* d, float* const* v, int64_t n) {
    const float *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3], *d4 = d[4], *d5 = d[5];
    float *v0 = v[0], *v1 = v[1], *v2 = v[2], *v3 = v[3], *v4 = v[4], *v5 = v[5];
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      const float a1 = d1[c], a2 = d2[c], a3 = d3[c], a4 = d4[c];
      const float p = a4 - 4.0f * a2, q = a3 - 4.0f * a1;  // rows 1, 2 share these
      const float r = a4 - a2, s = 2.0f * (a3 - a1);       // rows 3, 4 share these
      v0[c] = 4.0f * d0[c] - 5.0f * a2 + a4;
      v1[c] = p + q;
      v2[c] = p - q;
      v3[c] = r + s;
      v4[c] = r - s;
      v5[c] = 4.0f * a1 - 5.0f * a3 + d5[c];
    }
  }
  static void output(const float* const* w, float* const* y, int64_t n) {
    const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3], *w4 = w[4], *w5 = w[5];
    float *y0 = y[0], *y1 = y[1], *y2 = y[2], *y3 = y[3];
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      const float sp = w1[c] + w2[c], sm = w1[c] - w2[c];
      const float tp = w3[c] + w4[c], tm = w3[c] - w4[c];
      y0[c] = w0[c] + sp + tp;
      y1[c] = sm + 2.0f * tm;
      y2[c] = sp + 4.0f * tp;
      y3[c] = sm + 8.0f * tm + w5[c];
    }
  }
  static void weight(const float* const* g, float* const* u, int64_t n) {
    const float *g0 = g[0], *g1 = g[1], *g2 = g[2];
    float *u0 = u[0], *u1 = u[1], *u2 = u[2], *u3 = u[3], *u4 = u[4], *u5 = u[5];
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      const float h = g0[c] + g2[c], q = g0[c] * (1.0f / 24) + g2[c] * (1.0f / 6), r = g1[c] * (1.0f / 12);
      u0[c] = g0[c] * 0.25f;
      u1[c] = -(h + g1[c]) * (1.0f / 6);
      u2[c] = -(h - g1[c]) * (1.0f / 6);
      u3[c] = q + r;
      u4[c] = q - r;
      u5[c] = g2[c];
    }
  }
};

// Channels transformed per pass: an a x a x kChanBlock tile buffer stays in L1.
constexpr int64_t kChanBlock = 64;
// Scratch for the threads' V and M chunks together (floats), unless kMinChunkTiles tiles
// need more: with big Cin/Cout a chunk of fewer tiles makes sgemm re-pack U_k for too few rows.
constexpr int64_t kChunkBudget = int64_t(1) << 20;  // 4 MiB
constexpr int64_t kMinChunkTiles = 128;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up16(int64_t n) { return (n + 15) / 16 * 16; }  // keeps the sections 64-byte apart
// Floats between consecutive matrices of the a*a in U, V and M: n rounded up to a cache line,
// plus one. The transforms touch all a*a matrices at once; at sizes that are multiples of
// 4 KiB (e.g. 128 tiles x 384 channels) those a*a streams would share one L1/L2 set and
// evict each other on every access (measured: the weight transform 60-100 ms instead of ~2
// at 384 channels); a line's offset per matrix spreads them over a*a sets.
int64_t matrix_stride(int64_t n) { return round_up16(n) + 16; }

int64_t floats_per_tile(const Conv2dShape& s, int m) { return int64_t(m + 2) * (m + 2) * (s.Cin + s.Cout); }
// Scratch for one thread's V and M with tc tiles (matrix_stride adds at most 32 floats per matrix).
int64_t thread_floats(const Conv2dShape& s, int m, int64_t tc) {
  return floats_per_tile(s, m) * tc + int64_t(m + 2) * (m + 2) * 64;
}
int64_t chunk_budget(const Conv2dShape& s, int m) {
  return std::max(kChunkBudget, thread_floats(s, m, kMinChunkTiles));
}

int64_t weight_floats(const Conv2dShape& s, int m) {
  return int64_t(m + 2) * (m + 2) * matrix_stride(s.Cin * s.Cout) + round_up16(s.Cout);
}

// Transformed weights: [ U (a*a, Cout, Cin), matrix_stride apart | folded bias (Cout) ].
template <typename T>  // float (written by the transform) or const float (read by the forward)
struct Weights {
  T *u, *bias;
};
template <typename T>
Weights<T> split_weights(T* uw, const Conv2dShape& s, int m) {
  return {uw, uw + int64_t(m + 2) * (m + 2) * matrix_stride(s.Cin * s.Cout)};
}

// The forward's scratch: [ zeros (Cin) | the threads' V, M chunks ]. The per-call path's
// workspace is the transformed weights followed by this.
struct Scratch {
  float *zeros, *chunks;
};
Scratch split_scratch(float* ws, const Conv2dShape& s) { return {ws, ws + round_up16(s.Cin)}; }

// U_k (Cout,Cin) = scale[co] * (G g_{co,ci} G^T)_k for k = i*a+j; bias' = scale*bias + shift.
// U is stored (Cout,Cin), the weight's order: for one output channel, blocks of input
// channels are transformed with the channels innermost (vectorised) and written as a*a
// contiguous runs. Called by every thread of the region (omp for inside).
template <int M>
void transform_weights(const Weights<float>& l, const float* weight, const float* bias, const Conv2dShape& s,
                       const ConvEpilogue& e) {
  constexpr int A = M + 2;
  const int64_t Cin = s.Cin, Cout = s.Cout, ldu = matrix_stride(Cin * Cout);
#pragma omp for schedule(static)
  for (int64_t co = 0; co < Cout; ++co) {
    const float sc = e.scale ? e.scale[co] : 1.0f;
    for (int64_t c0 = 0; c0 < Cin; c0 += kChanBlock) {
      const int64_t n = std::min(kChanBlock, Cin - c0);
      alignas(64) float g[3][3][kChanBlock], t[A][3][kChanBlock];
      for (int64_t c = 0; c < n; ++c)  // g <- scale * weight[co, c0.., :, :], channels innermost
        for (int k = 0; k < 9; ++k) g[k / 3][k % 3][c] = sc * weight[(co * Cin + c0 + c) * 9 + k];
      for (int j = 0; j < 3; ++j) {  // t (A,3) = G g
        const float* in[3] = {g[0][j], g[1][j], g[2][j]};
        float* out[A];
        for (int i = 0; i < A; ++i) out[i] = t[i][j];
        F<M>::weight(in, out, n);
      }
      for (int i = 0; i < A; ++i) {  // U[i*A+j] = (t G^T)[i][j]
        const float* in[3] = {t[i][0], t[i][1], t[i][2]};
        float* out[A];
        for (int j = 0; j < A; ++j) out[j] = l.u + (i * A + j) * ldu + co * Cin + c0;
        F<M>::weight(in, out, n);
      }
    }
  }
#pragma omp for schedule(static)
  for (int64_t co = 0; co < Cout; ++co) {
    const float b = bias ? bias[co] : 0.0f;
    l.bias[co] = (e.scale ? e.scale[co] * b : b) + (e.shift ? e.shift[co] : 0.0f);
  }
}

struct TileGrid {
  int64_t th, tw;  // tiles per column / row
  int64_t count(const Conv2dShape& s) const { return s.B * th * tw; }
};

// V[k] row `row` (ldv floats between the a*a matrices) <- B^T d B for tile t (all Cin channels).
template <int M>
void input_tile(float* v, int64_t ldv, int64_t row, const float* x, const float* zeros, const Conv2dShape& s,
                const TileGrid& g, int64_t t) {
  constexpr int A = M + 2;
  const int64_t b = t / (g.th * g.tw), ty = t / g.tw % g.th, tx = t % g.tw;
  const float* p[A][A];  // the patch's pixels; outside the image: a row of zeros
  for (int i = 0; i < A; ++i)
    for (int j = 0; j < A; ++j) {
      const int64_t y = ty * M - 1 + i, xx = tx * M - 1 + j;
      p[i][j] = (y >= 0 && y < s.H && xx >= 0 && xx < s.W) ? x + ((b * s.H + y) * s.W + xx) * s.Cin : zeros;
    }
  alignas(64) float tmp[A][A][kChanBlock];
  for (int64_t c0 = 0; c0 < s.Cin; c0 += kChanBlock) {
    const int64_t n = std::min(kChanBlock, s.Cin - c0);
    for (int j = 0; j < A; ++j) {  // along the patch's columns: tmp = B^T d
      const float* in[A];
      float* out[A];
      for (int i = 0; i < A; ++i) in[i] = p[i][j] + c0, out[i] = tmp[i][j];
      F<M>::input(in, out, n);
    }
    for (int i = 0; i < A; ++i) {  // along its rows: V = tmp B
      const float* in[A];
      float* out[A];
      for (int j = 0; j < A; ++j) in[j] = tmp[i][j], out[j] = v + (i * A + j) * ldv + row * s.Cin + c0;
      F<M>::input(in, out, n);
    }
  }
}

// out's pixels of tile t <- [relu](A^T M A + bias'), M[k] row `row` (ldm floats between the matrices).
template <int M>
void output_tile(float* out, const float* mk, int64_t ldm, int64_t row, const float* bias, bool relu,
                 const Conv2dShape& s, const TileGrid& g, int64_t t) {
  constexpr int A = M + 2;
  const int64_t b = t / (g.th * g.tw), ty = t / g.tw % g.th, tx = t % g.tw, Cout = s.Cout;
  const int64_t mh = std::min<int64_t>(M, s.H - ty * M), mw = std::min<int64_t>(M, s.W - tx * M);
  alignas(64) float tmp[A][M][kChanBlock];
  alignas(64) float y[M][M][kChanBlock];
  for (int64_t c0 = 0; c0 < Cout; c0 += kChanBlock) {
    const int64_t n = std::min(kChanBlock, Cout - c0);
    for (int i = 0; i < A; ++i) {  // along the rows: tmp = M A
      const float* in[A];
      float* o[M];
      for (int j = 0; j < A; ++j) in[j] = mk + (i * A + j) * ldm + row * Cout + c0;
      for (int j = 0; j < M; ++j) o[j] = tmp[i][j];
      F<M>::output(in, o, n);
    }
    for (int j = 0; j < M; ++j) {  // along the columns: y = A^T tmp
      const float* in[A];
      float* o[M];
      for (int i = 0; i < A; ++i) in[i] = tmp[i][j];
      for (int i = 0; i < M; ++i) o[i] = y[i][j];
      F<M>::output(in, o, n);
    }
    const float* bc = bias + c0;
    for (int64_t i = 0; i < mh; ++i)
      for (int64_t j = 0; j < mw; ++j) {
        float* dst = out + ((b * s.H + ty * M + i) * s.W + tx * M + j) * Cout + c0;
        const float* src = y[i][j];
        if (relu) {
#pragma omp simd
          for (int64_t c = 0; c < n; ++c) {
            const float v = src[c] + bc[c];
            dst[c] = v > 0.f ? v : 0.f;
          }
        } else {
#pragma omp simd
          for (int64_t c = 0; c < n; ++c) dst[c] = src[c] + bc[c];
        }
      }
  }
}

template <int M>
void winograd_forward(float* out, const float* x, const Weights<const float>& w, const Conv2dShape& s, float* scratch, bool relu) {
  constexpr int A = M + 2, AA = A * A;
  const Scratch l = split_scratch(scratch, s);
  const TileGrid g{ceil_div(s.H, M), ceil_div(s.W, M)};
  const int64_t T = g.count(s), Cin = s.Cin, Cout = s.Cout, ldu = matrix_stride(Cin * Cout);
  const int64_t budget = chunk_budget(s, M);
  // Threads: all, as long as the budget holds a tile for each (up to kMinChunkTiles threads).
  const int nt = int(std::min<int64_t>(omp_get_max_threads(), budget / (thread_floats(s, M, 1) + 16)));
  // Tiles per chunk: the budget split over the threads, and every thread gets work.
  const int64_t per_thread = budget / nt / 16 * 16, per_tile = floats_per_tile(s, M);
  const int64_t tc = std::clamp<int64_t>((per_thread - thread_floats(s, M, 0)) / per_tile, 1, ceil_div(T, nt));
  const int64_t ldv = matrix_stride(tc * Cin), ldm = matrix_stride(tc * Cout);
  const int64_t chunks = ceil_div(T, tc);
  std::fill(l.zeros, l.zeros + Cin, 0.0f);
#pragma omp parallel num_threads(nt)
  {
    float* v = l.chunks + omp_get_thread_num() * per_thread;  // (AA, tc, Cin), ldv apart
    float* mk = v + AA * ldv;                                  // (AA, tc, Cout), ldm apart
#pragma omp for schedule(dynamic, 1)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t t0 = ch * tc, n = std::min(tc, T - t0);
      for (int64_t r = 0; r < n; ++r) input_tile<M>(v, ldv, r, x, l.zeros, s, g, t0 + r);
      // M_k (n,Cout) = V_k (n,Cin) @ U_k^T (Cin,Cout)
      for (int k = 0; k < AA; ++k)
        sgemm(false, true, n, Cout, Cin, 1.0f, v + k * ldv, Cin, w.u + k * ldu, Cin, 0.0f, mk + k * ldm, Cout);
      for (int64_t r = 0; r < n; ++r) output_tile<M>(out, mk, ldm, r, w.bias, relu, s, g, t0 + r);
    }
  }
}

void check_tile(int m) { MM_CHECK(m == 2 || m == 4, "winograd: tile size must be 2 or 4, got " + std::to_string(m)); }

void check_conv(const Conv2dShape& s) {
  MM_CHECK(winograd_shape_ok(s) && s.B > 0 && s.H > 0 && s.W > 0 && s.Cin > 0 && s.Cout > 0,
           "winograd conv: needs a 3x3, stride 1, pad 1 conv of a non-empty shape");
}

// MM_WINOGRAD: unset -> measured choice, "0" -> never, "2"/"4" -> that tile size.
int env_choice() {
  static const int choice = [] {
    const char* v = std::getenv("MM_WINOGRAD");
    if (!v || !*v) return -1;
    const std::string sv(v);
    MM_CHECK(sv == "0" || sv == "2" || sv == "4", "MM_WINOGRAD must be 0, 2 or 4, got '" + sv + "'");
    return std::stoi(sv);
  }();
  return choice;
}

}  // namespace

bool winograd_shape_ok(const Conv2dShape& s) { return s.KH == 3 && s.KW == 3 && s.stride == 1 && s.pad == 1; }

int winograd_tile_for(const Conv2dShape& s, bool weights_transformed) {
  if (!winograd_shape_ok(s)) return 0;
  const int env = env_choice();
  if (env >= 0) return env;
  // Measured per shape against im2col (docs/benchmarks.md, AVX2 section; MedMamba-T's
  // convs at batch 8 and 1, 1 and 2 threads): F(4x4) is fastest wherever it has enough
  // tiles to amortise the per-call weight transform (a*a*Cin*Cout floats written, read
  // by the GEMMs) and the GEMMs' per-call packing; with fewer, F(2x2) (half the
  // weight-transform floats), and below that im2col. E.g. 7x7 at 384 channels: batch 8
  // F(2x2) 10.7 ms, F(4x4) 11.0, im2col 14.5; batch 1 F(2x2) 3.6, im2col 2.9.
  // Small channel counts did not favour im2col (c = 4..32 at 56x56 and 28x28: F(4x4) fastest).
  const int64_t tiles4 = s.B * ceil_div(s.H, 4) * ceil_div(s.W, 4), tiles2 = s.B * ceil_div(s.H, 2) * ceil_div(s.W, 2);
  // With the weights transformed beforehand, F(2x2) also beats im2col at 7x7 and 384
  // channels at batch 1 (16 tiles; 1 thread, standalone: 1.5-2.3 ms against 3.3-3.5), the
  // stage-4 convs of a sub-batch of one image. F(4x4)'s choice stays: it was not faster
  // there, nor at 14x14 and 192 channels at batch 1 (1.2 against F(2x2)'s 1.2).
  if (tiles4 >= 48) return 4;
  if (tiles2 >= (weights_transformed ? 16 : 32)) return 2;
  return 0;
}

int64_t winograd_weight_floats(const Conv2dShape& s, int m) {
  check_tile(m);
  return weight_floats(s, m);
}

int64_t winograd_workspace_floats(const Conv2dShape& s, int m) {
  return winograd_weight_floats(s, m) + round_up16(s.Cin) + chunk_budget(s, m);
}

void winograd_transform_weights(float* uw, const float* weight, const float* bias, const Conv2dShape& s, int m,
                                const ConvEpilogue& epilogue) {
  check_conv(s);
  check_tile(m);
  const Weights<float> w = split_weights(uw, s, m);
#pragma omp parallel
  {
    if (m == 2)
      transform_weights<2>(w, weight, bias, s, epilogue);
    else
      transform_weights<4>(w, weight, bias, s, epilogue);
  }
}

void conv3x3_winograd_forward_transformed(float* out, const float* x, const float* uw, const Conv2dShape& s, int m,
                                          float* workspace, bool relu) {
  check_conv(s);
  check_tile(m);
  std::vector<float> own;
  if (!workspace) {
    own.resize(size_t(winograd_workspace_floats(s, m)));
    workspace = own.data();
  }
  float* scratch = workspace + weight_floats(s, m);
  const Weights<const float> w = split_weights(uw, s, m);
  if (m == 2)
    winograd_forward<2>(out, x, w, s, scratch, relu);
  else
    winograd_forward<4>(out, x, w, s, scratch, relu);
}

void conv3x3_winograd_forward(float* out, const float* x, const float* weight, const float* bias,
                              const Conv2dShape& s, int m, float* workspace, const ConvEpilogue& epilogue) {
  check_conv(s);
  check_tile(m);
  if (!workspace) {
    std::vector<float> own(size_t(winograd_workspace_floats(s, m)));
    return conv3x3_winograd_forward(out, x, weight, bias, s, m, own.data(), epilogue);
  }
  winograd_transform_weights(workspace, weight, bias, s, m, epilogue);  // the front of the workspace
  conv3x3_winograd_forward_transformed(out, x, workspace, s, m, workspace, epilogue.relu);
}

WinogradWeightCache::WinogradWeightCache() { clear(); }

void WinogradWeightCache::clear() {
  for (std::unique_ptr<Entry>& e : entries_) e = std::make_unique<Entry>();
}

const float* WinogradWeightCache::get(const float* weight, const float* bias, const Conv2dShape& s, int m,
                                      const ConvEpilogue& epilogue) {
  check_conv(s);
  check_tile(m);
  Entry& e = *entries_[m == 4];
  std::call_once(e.built, [&] {
    e.uw.resize(size_t(weight_floats(s, m)));
    winograd_transform_weights(e.uw.data(), weight, bias, s, m, epilogue);
    e.weight = weight;
    e.Cin = s.Cin;
    e.Cout = s.Cout;
  });
  MM_CHECK(e.weight == weight && e.Cin == s.Cin && e.Cout == s.Cout,
           "WinogradWeightCache: built for another conv (" + std::to_string(e.Cin) + " -> " + std::to_string(e.Cout) +
               " channels), asked for " + std::to_string(s.Cin) + " -> " + std::to_string(s.Cout));
  return e.uw.data();
}

}  // namespace mm
