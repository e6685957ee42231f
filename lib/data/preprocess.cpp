#include "data/preprocess.h"

#include "data/input_stages.h"
#include "data/vectorise.h"

#include <algorithm>
#include <cmath>
#include <optional>

namespace mm {

Interpolation interpolation_from_name(const std::string& name) {
  if (name == "bilinear") return Interpolation::Bilinear;
  if (name == "bicubic") return Interpolation::Bicubic;
  if (name == "nearest") return Interpolation::Nearest;
  if (name == "bilinear-no-antialias") return Interpolation::BilinearNoAntialias;
  throw Error("unknown interpolation '" + name + "' (bilinear, bicubic, nearest, bilinear-no-antialias)");
}

const char* interpolation_name(Interpolation m) {
  switch (m) {
    case Interpolation::Bilinear: return "bilinear";
    case Interpolation::Bicubic: return "bicubic";
    case Interpolation::Nearest: return "nearest";
    case Interpolation::BilinearNoAntialias: return "bilinear-no-antialias";
  }
  return "?";
}

namespace {

// Pillow's filters (libImaging/Resample.c).
double triangle_filter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}
double cubic_filter(double x) {  // Keys cubic with a = -0.5, as Pillow
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Pillow's precompute_coeffs: when shrinking, the filter's support is scaled by
// the shrink factor, which is what makes its bilinear antialiased.
AxisWeights pillow_weights(int64_t in_size, int64_t out_size, double (*filter)(double), double support) {
  AxisWeights a;
  const double scale = double(in_size) / double(out_size);
  const double filterscale = std::max(scale, 1.0);
  support *= filterscale;
  a.stride = int64_t(std::ceil(support)) * 2 + 1;
  a.first.resize(size_t(out_size));
  a.count.resize(size_t(out_size));
  a.weights.assign(size_t(out_size * a.stride), 0.0);
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (double(xx) + 0.5) * scale;
    int64_t xmin = std::max<int64_t>(int64_t(center - support + 0.5), 0);
    int64_t xmax = std::min<int64_t>(int64_t(center + support + 0.5), in_size) - xmin;
    double* k = &a.weights[size_t(xx * a.stride)];
    double total = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      k[x] = filter((double(x + xmin) - center + 0.5) / filterscale);
      total += k[x];
    }
    if (total != 0.0)
      for (int64_t x = 0; x < xmax; ++x) k[x] /= total;
    a.first[size_t(xx)] = xmin;
    a.count[size_t(xx)] = std::max<int64_t>(xmax, 0);
  }
  return a;
}

// Linear interpolation between the two nearest source pixels, half-pixel
// centres, edges clamped (torch's align_corners=False without antialiasing).
AxisWeights linear_weights(int64_t in_size, int64_t out_size) {
  AxisWeights a;
  a.stride = 2;
  a.first.resize(size_t(out_size));
  a.count.assign(size_t(out_size), 2);
  a.weights.assign(size_t(out_size * 2), 0.0);
  const double scale = double(in_size) / double(out_size);
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double src = std::max((double(xx) + 0.5) * scale - 0.5, 0.0);
    const int64_t x0 = std::min(int64_t(src), in_size - 1);
    const double frac = src - double(x0);
    if (x0 + 1 < in_size) {
      a.weights[size_t(xx * 2)] = 1.0 - frac;
      a.weights[size_t(xx * 2 + 1)] = frac;
    } else {
      a.weights[size_t(xx * 2)] = 1.0;
      a.count[size_t(xx)] = 1;
    }
    a.first[size_t(xx)] = x0;
  }
  return a;
}

// Pillow's NEAREST resize (ImagingScaleAffine): the source coordinate is a
// running sum starting at scale/2, truncated; kept as a sum to pick the same
// pixel as Pillow where the product would round differently.
AxisWeights nearest_weights(int64_t in_size, int64_t out_size) {
  AxisWeights a;
  a.stride = 1;
  a.first.resize(size_t(out_size));
  a.count.assign(size_t(out_size), 1);
  a.weights.assign(size_t(out_size), 1.0);
  const double scale = double(in_size) / double(out_size);
  double pos = scale * 0.5;
  for (int64_t xx = 0; xx < out_size; ++xx) {
    a.first[size_t(xx)] = std::clamp<int64_t>(int64_t(pos), 0, in_size - 1);
    pos += scale;
  }
  return a;
}

}  // namespace

AxisWeights axis_weights(int64_t in_size, int64_t out_size, Interpolation m) {
  switch (m) {
    case Interpolation::Bilinear: return pillow_weights(in_size, out_size, triangle_filter, 1.0);
    case Interpolation::Bicubic: return pillow_weights(in_size, out_size, cubic_filter, 2.0);
    case Interpolation::Nearest: return nearest_weights(in_size, out_size);
    case Interpolation::BilinearNoAntialias: return linear_weights(in_size, out_size);
  }
  throw Error("resize: bad interpolation");
}

void resize_pixels(const float* src, int64_t h, int64_t w, int64_t c, float* dst, int64_t out_h,
                   int64_t out_w, Interpolation method) {
  MM_CHECK(h > 0 && w > 0 && c > 0 && out_h > 0 && out_w > 0, "resize: empty image or target size");
  if (h == out_h && w == out_w) {  // Pillow copies in this case; so do we
    std::copy(src, src + h * w * c, dst);
    return;
  }
  const AxisWeights wx = axis_weights(w, out_w, method), wy = axis_weights(h, out_h, method);
  // Horizontal pass into a float intermediate (as Pillow), then vertical.
  std::vector<float> tmp(size_t(h * out_w * c));
#pragma omp parallel for if (h * out_w > 65536)
  for (int64_t y = 0; y < h; ++y)
    for (int64_t xx = 0; xx < out_w; ++xx) {
      const double* k = &wx.weights[size_t(xx * wx.stride)];
      const float* row = src + (y * w + wx.first[size_t(xx)]) * c;
      for (int64_t ch = 0; ch < c; ++ch) {
        double sum = 0.0;
        for (int64_t i = 0; i < wx.count[size_t(xx)]; ++i) sum += double(row[i * c + ch]) * k[i];
        tmp[size_t((y * out_w + xx) * c + ch)] = float(sum);
      }
    }
#pragma omp parallel for if (out_h * out_w > 65536)
  for (int64_t yy = 0; yy < out_h; ++yy) {
    const double* k = &wy.weights[size_t(yy * wy.stride)];
    const int64_t y0 = wy.first[size_t(yy)], n = wy.count[size_t(yy)];
    for (int64_t i = 0; i < out_w * c; ++i) {
      double sum = 0.0;
      for (int64_t j = 0; j < n; ++j) sum += double(tmp[size_t((y0 + j) * out_w * c + i)]) * k[j];
      dst[yy * out_w * c + i] = float(sum);
    }
  }
}

Image resize(const Image& img, int64_t out_h, int64_t out_w, Interpolation method) {
  Image out = img;
  out.height = out_h;
  out.width = out_w;
  out.pixels.assign(size_t(out_h * out_w * img.channels), 0.f);
  resize_pixels(img.pixels.data(), img.height, img.width, img.channels, out.pixels.data(), out_h, out_w,
                method);
  return out;
}

namespace {

// [lo, hi] -> [0, 1], clamped, NaN -> 0; a step where hi <= lo. In double,
// times the reciprocal of the width (a division per pixel cost more than the
// rest of the pass; the float result moves by at most one ulp, rarely); the
// comparisons (not std::clamp, not isnan) let the compiler vectorise it.
MM_VECTORISE_COMPARISONS void window_into(const float* src, size_t n, double lo, double hi, float* dst) {
  const double span = hi - lo, scale = 1.0 / span;
  if (span > 0) {
    for (size_t i = 0; i < n; ++i) {
      double t = (double(src[i]) - lo) * scale;
      t = t > 0.0 ? t : 0.0;  // NaN fails the comparison: 0
      dst[i] = float(t < 1.0 ? t : 1.0);
    }
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = double(src[i]) > lo ? 1.f : 0.f;
  }
}

// One output line of a separable pass: acc[i] = sum over output out_index's taps j
// of k[j] * src[(first + j) * len + i], i.e. the filter applied to whole source
// lines of `len` floats at once (contiguous, so it vectorises).
// Blocks of kBlock sums stay in registers over all taps (a sum per element
// stored and loaded again at every tap cost twice the time); each sum still
// adds its taps in order.
void taps_over_lines(const float* src, int64_t len, const AxisWeights& a, int64_t out_index, double* acc) {
  constexpr int64_t kBlock = 16;
  const double* k = &a.weights[size_t(out_index * a.stride)];
  const float* lines = src + a.first[size_t(out_index)] * len;
  const int64_t taps = a.count[size_t(out_index)];
  int64_t i0 = 0;
  for (; i0 + kBlock <= len; i0 += kBlock) {
    double sum[kBlock] = {};
    for (int64_t j = 0; j < taps; ++j)
      for (int64_t i = 0; i < kBlock; ++i) sum[i] += double(lines[j * len + i0 + i]) * k[j];
    std::copy(sum, sum + kBlock, acc + i0);
  }
  for (; i0 < len; ++i0) {
    double sum = 0.0;
    for (int64_t j = 0; j < taps; ++j) sum += double(lines[j * len + i0]) * k[j];
    acc[i0] = sum;
  }
}

// dst (cols x rows) = src (rows x cols) transposed, in tiles that stay in cache.
void transpose(const float* src, int64_t rows, int64_t cols, float* dst) {
  constexpr int64_t kTile = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * rows + r] = src[r * cols + c];
    }
}

// Per-thread buffers: a 512 x 512 slice needs about 1 MB in some, every image.
struct ResizeScratch {
  std::vector<float> rows, columns, columns_out;
  std::vector<double> acc;
};

// Grey resize with both passes as multiply-adds over contiguous lines (so they
// vectorise): the vertical pass first, then, on its result transposed, the
// horizontal pass, whose result is transposed back into dst (out_h x out_w).
// Double accumulation and a float intermediate as Pillow; Pillow runs the
// horizontal pass first, so the intermediate rounds at another point: about
// one float ulp, well inside the 1e-6 its references are held to.
void resize_grey(const float* src, int64_t h, int64_t w, float* dst, int64_t out_h, int64_t out_w,
                 Interpolation method, ResizeScratch& s) {
  const AxisWeights wy = axis_weights(h, out_h, method), wx = axis_weights(w, out_w, method);
  s.rows.resize(size_t(out_h * w));
  s.columns.resize(size_t(w * out_h));
  s.columns_out.resize(size_t(out_w * out_h));
  s.acc.resize(size_t(std::max(w, out_h)));
  for (int64_t yy = 0; yy < out_h; ++yy) {
    taps_over_lines(src, w, wy, yy, s.acc.data());
    std::copy(s.acc.begin(), s.acc.begin() + w, s.rows.begin() + yy * w);
  }
  transpose(s.rows.data(), out_h, w, s.columns.data());
  for (int64_t xx = 0; xx < out_w; ++xx) {
    taps_over_lines(s.columns.data(), out_h, wx, xx, s.acc.data());
    std::copy(s.acc.begin(), s.acc.begin() + out_h, s.columns_out.begin() + xx * out_h);
  }
  transpose(s.columns_out.data(), out_w, out_h, dst);
}

struct PreprocessScratch {
  std::vector<float> unit, sized, channel;
  ResizeScratch resize;
};
PreprocessScratch& preprocess_scratch() {
  thread_local PreprocessScratch s;
  return s;
}

}  // namespace

Image apply_window(const Image& img) {
  Image out = img;
  window_into(img.pixels.data(), img.pixels.size(), img.window_low, img.window_high, out.pixels.data());
  out.window_low = 0;
  out.window_high = 1;
  return out;
}

void check_preprocessable(const Image& img) {
  MM_CHECK(img.channels == 1 || img.channels == 3,
           img.source_path + ": preprocess needs 1 or 3 channels, got " + std::to_string(img.channels));
  MM_CHECK(img.height > 0 && img.width > 0, img.source_path + ": preprocess: empty image");
  MM_CHECK(int64_t(img.pixels.size()) == img.numel(), img.source_path + ": preprocess: pixel count mismatch");
}

void preprocess_into(const Image& img, const Preprocess& p, float* dst) {
  check_preprocessable(img);
  const int64_t out_c = int64_t(p.mean.size());
  MM_CHECK((out_c == 1 || out_c == 3) && p.std.size() == p.mean.size(),
           "preprocess: mean/std must have 1 or 3 entries");
  const int64_t s = p.input_size, plane = s * s;
  const Interpolation method = interpolation_from_name(p.interpolation);
  PreprocessScratch& scratch = preprocess_scratch();
  std::optional<TimedStage> stage(std::in_place, InputStage::Window);
  scratch.unit.resize(img.pixels.size());
  window_into(img.pixels.data(), img.pixels.size(), img.window_low, img.window_high, scratch.unit.data());
  stage.emplace(InputStage::Resize);
  scratch.sized.resize(size_t(plane * img.channels));
  // A resize takes the vectorised grey resize, channel by channel, into planes
  // (RGB: deinterleaved first). Resizing before the channel conversion resizes
  // grey once instead of three times; both steps are linear, so the order does
  // not change the result.
  const bool planar = img.height != s || img.width != s;
  if (planar && img.channels == 1) {
    resize_grey(scratch.unit.data(), img.height, img.width, scratch.sized.data(), s, s, method, scratch.resize);
  } else if (planar) {
    const int64_t n = img.height * img.width;
    scratch.channel.resize(size_t(n));
    for (int64_t c = 0; c < 3; ++c) {
      for (int64_t i = 0; i < n; ++i) scratch.channel[size_t(i)] = scratch.unit[size_t(i * 3 + c)];
      resize_grey(scratch.channel.data(), img.height, img.width, scratch.sized.data() + c * plane, s, s, method,
                  scratch.resize);
    }
  } else {
    std::copy(scratch.unit.begin(), scratch.unit.end(), scratch.sized.begin());  // interleaved, as Pillow copies
  }
  stage.emplace(InputStage::Normalise);
  const float* sized = scratch.sized.data();
  for (int64_t oc = 0; oc < out_c; ++oc) {
    const float mean = p.mean[size_t(oc)], inv_std = 1.f / p.std[size_t(oc)];
    float* out = dst + oc * plane;
    if (img.channels == 1 || (planar && img.channels == out_c)) {  // one plane: one branch-free loop
      const float* in = sized + (img.channels == 1 ? 0 : oc * plane);
      for (int64_t i = 0; i < plane; ++i) out[i] = (in[i] - mean) * inv_std;
      continue;
    }
    if (planar) {  // RGB -> grey for a 1-channel model: ITU-R 601-2 luma, as PIL's convert("L")
      for (int64_t i = 0; i < plane; ++i)
        out[i] = (0.299f * sized[i] + 0.587f * sized[plane + i] + 0.114f * sized[2 * plane + i] - mean) * inv_std;
      continue;
    }
    for (int64_t i = 0; i < plane; ++i) {
      float v;
      if (img.channels == out_c) v = sized[size_t(i * img.channels + oc)];
      else if (img.channels == 1) v = sized[size_t(i)];
      else  // RGB -> grey for a 1-channel model: ITU-R 601-2 luma, as PIL's convert("L")
        v = 0.299f * sized[size_t(i * 3)] + 0.587f * sized[size_t(i * 3 + 1)] + 0.114f * sized[size_t(i * 3 + 2)];
      out[i] = (v - mean) * inv_std;
    }
  }
}

Tensor preprocess(const Image& img, const Preprocess& p) {
  Tensor t = Tensor::empty({int64_t(p.mean.size()), p.input_size, p.input_size});
  preprocess_into(img, p, t.f32());
  return t;
}

}  // namespace mm
