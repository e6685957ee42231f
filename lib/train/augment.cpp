#include "train/augment.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace mm {

AugmentOptions AugmentOptions::none() {
  AugmentOptions a;
  a.crop = a.flip = a.rotate = a.jitter = a.translate = false;
  return a;
}

AugmentOptions AugmentOptions::from_list(const std::string& list) {
  AugmentOptions a = none();
  if (list.empty() || list == "none") return a;
  std::stringstream in(list);
  for (std::string name; std::getline(in, name, ',');) {
    if (name == "crop")
      a.crop = true;
    else if (name == "flip")
      a.flip = true;
    else if (name == "rotate")
      a.rotate = true;
    else if (name == "jitter")
      a.jitter = true;
    else if (name == "translate")
      a.translate = true;
    else
      throw Error("unknown augmentation '" + name + "' (crop, flip, rotate, jitter, translate, or none)");
  }
  return a;
}

std::string AugmentOptions::to_list() const {
  std::string s;
  for (auto [on, name] :
       {std::pair{crop, "crop"}, {flip, "flip"}, {rotate, "rotate"}, {jitter, "jitter"}, {translate, "translate"}})
    if (on) s += (s.empty() ? "" : ",") + std::string(name);
  return s.empty() ? "none" : s;
}

bool AugmentOptions::any() const { return crop || flip || rotate || jitter || translate; }

namespace {

uint64_t mix(uint64_t x) { return SplitMix64(x).next(); }

// One independent stream per augmentation step.
enum Step : uint64_t { kCrop = 1, kFlip, kRotate, kJitter, kTranslate };
SplitMix64 step_stream(uint64_t sample_seed, Step step) { return SplitMix64(mix(sample_seed ^ (step << 56))); }

double uniform01(SplitMix64& rng) { return double(rng.next() >> 11) * 0x1p-53; }
double uniform(SplitMix64& rng, double lo, double hi) { return lo + (hi - lo) * uniform01(rng); }
// In [0, n): the high word of next() * n (bias below n / 2^64).
int64_t uniform_int(SplitMix64& rng, int64_t n) { return int64_t((unsigned __int128)rng.next() * uint64_t(n) >> 64); }
// Python's round(): halves to even, which nearbyint does in the default rounding mode.
int64_t round_half_even(double v) { return int64_t(std::nearbyint(v)); }

}  // namespace

uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t sample_index) {
  return mix(mix(mix(seed) ^ uint64_t(epoch)) ^ uint64_t(sample_index));
}

CropBox random_resized_crop_box(int64_t height, int64_t width, double scale_min, double scale_max, double ratio_min,
                                double ratio_max, SplitMix64& rng) {
  const double area = double(height) * double(width);
  const double log_lo = std::log(ratio_min), log_hi = std::log(ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * uniform(rng, scale_min, scale_max);
    const double aspect = std::exp(uniform(rng, log_lo, log_hi));
    const int64_t w = round_half_even(std::sqrt(target_area * aspect));
    const int64_t h = round_half_even(std::sqrt(target_area / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int64_t top = uniform_int(rng, height - h + 1);
      const int64_t left = uniform_int(rng, width - w + 1);
      return {top, left, h, w};
    }
  }
  const double in_ratio = double(width) / double(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio_min)
    h = round_half_even(double(w) / ratio_min);
  else if (in_ratio > ratio_max)
    w = round_half_even(double(h) * ratio_max);
  return {(height - h) / 2, (width - w) / 2, h, w};
}

AugmentDraw draw_augment(const AugmentOptions& a, int64_t size, uint64_t seed) {
  AugmentDraw d;
  d.crop = {0, 0, size, size};
  if (a.crop) {
    SplitMix64 rng = step_stream(seed, kCrop);
    d.crop = random_resized_crop_box(size, size, a.crop_scale_min, 1.0, 3.0 / 4.0, 4.0 / 3.0, rng);
  }
  if (a.flip) {
    SplitMix64 rng = step_stream(seed, kFlip);
    d.flip = uniform01(rng) < a.flip_probability;
  }
  if (a.rotate) {
    SplitMix64 rng = step_stream(seed, kRotate);
    d.angle_degrees = uniform(rng, -a.rotate_degrees, a.rotate_degrees);
  }
  if (a.jitter) {
    SplitMix64 rng = step_stream(seed, kJitter);
    d.contrast_first = uniform01(rng) < 0.5;
    d.brightness = uniform(rng, std::max(0.0, 1.0 - a.brightness), 1.0 + a.brightness);
    d.contrast = uniform(rng, std::max(0.0, 1.0 - a.contrast), 1.0 + a.contrast);
  }
  if (a.translate) {
    SplitMix64 rng = step_stream(seed, kTranslate);
    const double max_shift = double(a.translate_fraction) * double(size);
    d.shift_x = round_half_even(uniform(rng, -max_shift, max_shift));
    d.shift_y = round_half_even(uniform(rng, -max_shift, max_shift));
  }
  return d;
}

namespace {

// Pixel-centre coordinates (X, Y) = (x + 0.5, y + 0.5) of the image before the
// translation map to cached pixel-index coordinates s = A (X, Y, 1), and to the
// rotated frame r = R (X, Y, 1), which must lie in [0, S)^2 (else fill).
struct Geometry {
  float a[2][3], r[2][3];
  bool rotated = false, identity = false;
};

Geometry geometry_of(const AugmentDraw& d, int64_t size) {
  const double s = double(size), c = s / 2;
  const double rad = d.angle_degrees * (3.14159265358979323846 / 180.0), cs = std::cos(rad), sn = std::sin(rad);
  // Inverse rotation (PIL's rotate: counter-clockwise on screen for a positive angle).
  const double r[2][3] = {{cs, -sn, c - cs * c + sn * c}, {sn, cs, c - sn * c - cs * c}};
  // Flip then crop-resize: x1 = flip ? S - x2 : x2; s = left + x1 * w / S - 0.5.
  const double kx = double(d.crop.width) / s, ky = double(d.crop.height) / s;
  const double fx = d.flip ? -kx : kx, gx = double(d.crop.left) + (d.flip ? kx * s : 0.0) - 0.5;
  const double gy = double(d.crop.top) - 0.5;
  Geometry g;
  for (int j = 0; j < 3; ++j) {
    g.r[0][j] = float(r[0][j]), g.r[1][j] = float(r[1][j]);
    g.a[0][j] = float(fx * r[0][j] + (j == 2 ? gx : 0.0));
    g.a[1][j] = float(ky * r[1][j] + (j == 2 ? gy : 0.0));
  }
  g.rotated = d.angle_degrees != 0;
  g.identity =
      !g.rotated && !d.flip && d.crop.top == 0 && d.crop.left == 0 && d.crop.width == size && d.crop.height == size;
  return g;
}

struct Jitter {
  bool on = false, contrast_first = false;
  float brightness = 1, contrast = 1, contrast_offset = 0;  // offset: (1 - c) * mean grey
  float operator()(float v) const {
    if (!on) return v;
    if (contrast_first) v = std::clamp(contrast * v + contrast_offset, 0.f, 1.f);
    v = std::clamp(brightness * v, 0.f, 1.f);
    if (!contrast_first) v = std::clamp(contrast * v + contrast_offset, 0.f, 1.f);
    return v;
  }
};

// The geometric transform at pixel centre X of a row whose coordinate
// offsets (the Y terms) are precomputed: cached values scaled to [0, 1].
template <class T, int CC>
struct Sampler {
  const T* src;
  int64_t S;
  const Geometry& g;
  float scale;

  struct Row {
    float sx0, sy0, rx0, ry0;
    int64_t y;
  };
  Row row(int64_t y) const {
    const float Y = float(y) + 0.5f;
    return {g.a[0][1] * Y + g.a[0][2], g.a[1][1] * Y + g.a[1][2], g.r[0][1] * Y + g.r[0][2], g.r[1][1] * Y + g.r[1][2],
            y};
  }
  void at(const Row& r, int64_t x, float* v) const {
    if (g.identity) {
      for (int c = 0; c < CC; ++c) v[c] = float(src[(r.y * S + x) * CC + c]) * scale;
      return;
    }
    const float X = float(x) + 0.5f;
    if (g.rotated) {  // outside the rotated frame: fill
      const float rx = g.r[0][0] * X + r.rx0, ry = g.r[1][0] * X + r.ry0;
      if (!(rx >= 0 && rx < float(S) && ry >= 0 && ry < float(S))) {
        for (int c = 0; c < CC; ++c) v[c] = 0.f;
        return;
      }
    }
    const float sx = g.a[0][0] * X + r.sx0, sy = g.a[1][0] * X + r.sy0;
    const float fx = std::floor(sx), fy = std::floor(sy), dx = sx - fx, dy = sy - fy;
    const int64_t ix = int64_t(fx), iy = int64_t(fy);
    const int64_t x0 = std::clamp<int64_t>(ix, 0, S - 1), x1 = std::clamp<int64_t>(ix + 1, 0, S - 1);
    const T* r0 = src + std::clamp<int64_t>(iy, 0, S - 1) * S * CC;
    const T* r1 = src + std::clamp<int64_t>(iy + 1, 0, S - 1) * S * CC;
    for (int c = 0; c < CC; ++c) {
      const float p00 = float(r0[x0 * CC + c]), p01 = float(r0[x1 * CC + c]);
      const float p10 = float(r1[x0 * CC + c]), p11 = float(r1[x1 * CC + c]);
      const float top = p00 + dx * (p01 - p00), bottom = p10 + dx * (p11 - p10);
      v[c] = (top + dy * (bottom - top)) * scale;
    }
  }
};

// The grey level the contrast averages: after a brightness-first jitter's
// factor b (b = 1 otherwise) and its clamp.
template <int CC>
float grey_of(const float* v, float b) {
  if (CC == 1) return std::min(b * v[0], 1.f);
  return 0.2989f * std::min(b * v[0], 1.f) + 0.587f * std::min(b * v[1], 1.f) + 0.114f * std::min(b * v[2], 1.f);
}

// Sum of grey_of over out's rows [y_lo, y_hi) and columns [x_lo, x_hi), in
// eight independent lanes per row so that the compiler vectorises it.
template <int CC>
double grey_sum(const float* out, int64_t S, int64_t y_lo, int64_t y_hi, int64_t x_lo, int64_t x_hi, float b) {
  double total = 0;
  const int64_t plane = S * S;
  for (int64_t y = y_lo; y < y_hi; ++y) {
    const float* p = out + y * S;
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0}, v[CC];
    int64_t x = x_lo;
    for (; x + 8 <= x_hi; x += 8)
      for (int j = 0; j < 8; ++j) {
        for (int c = 0; c < CC; ++c) v[c] = p[c * plane + x + j];
        lanes[j] += grey_of<CC>(v, b);
      }
    float row = 0;
    for (int j = 0; j < 8; ++j) row += lanes[j];
    for (; x < x_hi; ++x) {
      for (int c = 0; c < CC; ++c) v[c] = p[c * plane + x];
      row += grey_of<CC>(v, b);
    }
    total += double(row);
  }
  return total;
}

// Pass 1: the geometric transform of the cached image into planes 0..CC-1 of
// out (values in [0, 1], shifted by the translation), and the mean grey level
// (grey_of with mean_brightness) of the untranslated result when
// mean_brightness > 0: the pixels the translation moves out of view count too.
template <class T, int CC>
double sample_planes(const T* src, int64_t S, const Geometry& g, float scale, int64_t tx, int64_t ty,
                     float mean_brightness, float* out) {
  const Sampler<T, CC> sampler{src, S, g, scale};
  const bool need_mean = mean_brightness > 0;
  const int64_t plane = S * S;
  // The untranslated grid's visible part: x in [vx_lo, vx_hi), y in [vy_lo, vy_hi).
  const int64_t vx_lo = std::clamp<int64_t>(-tx, 0, S), vx_hi = std::clamp<int64_t>(S - tx, 0, S);
  const int64_t vy_lo = std::clamp<int64_t>(-ty, 0, S), vy_hi = std::clamp<int64_t>(S - ty, 0, S);
  double hidden = 0;
  float v[CC];
  for (int64_t y = 0; y < S; ++y) {
    const bool row_visible = y >= vy_lo && y < vy_hi && vx_lo < vx_hi;
    if (!row_visible && !need_mean) continue;
    const typename Sampler<T, CC>::Row r = sampler.row(y);
    if (row_visible) {
      float* dst = out + (y + ty) * S;
      for (int64_t x = vx_lo; x < vx_hi; ++x) {
        sampler.at(r, x, v);
        for (int c = 0; c < CC; ++c) dst[c * plane + x + tx] = v[c];
      }
    }
    if (need_mean) {
      float row = 0;
      for (int64_t x = 0; x < S; ++x) {
        if (row_visible && x == vx_lo) x = vx_hi;
        if (x >= S) break;
        sampler.at(r, x, v);
        row += grey_of<CC>(v, mean_brightness);
      }
      hidden += double(row);
    }
  }
  if (!need_mean) return 0;
  const int64_t ox_lo = vx_lo + tx, ox_hi = vx_hi + tx, oy_lo = vy_lo + ty, oy_hi = vy_hi + ty;
  const double visible = vx_lo < vx_hi ? grey_sum<CC>(out, S, oy_lo, oy_hi, ox_lo, ox_hi, mean_brightness) : 0;
  return (hidden + visible) / double(plane);
}

}  // namespace

void apply_augment(const CachedImage& img, int64_t S, const AugmentDraw& d, const Preprocess& p, float* out) {
  const int64_t out_c = int64_t(p.mean.size());
  MM_CHECK((out_c == 1 || out_c == 3) && p.std.size() == p.mean.size(), "augment: mean/std must have 1 or 3 entries");
  MM_CHECK(img.channels == 1 || (img.channels == 3 && out_c == 3), "augment: a " + std::to_string(img.channels) +
                                                                       "-channel image for a " + std::to_string(out_c) +
                                                                       "-channel model");
  MM_CHECK(size_t(S * S * img.channels) == (img.wide ? img.u16.size() : img.u8.size()),
           "augment: cached image size mismatch");
  const Geometry g = geometry_of(d, S);
  Jitter jitter;
  jitter.on = d.brightness != 1 || d.contrast != 1;
  jitter.contrast_first = d.contrast_first;
  jitter.brightness = float(d.brightness);
  jitter.contrast = float(d.contrast);
  // The contrast's mean grey is taken on the image it is applied to.
  const float mean_brightness = d.contrast == 1 ? 0.f : (d.contrast_first ? 1.f : float(d.brightness));
  const int64_t tx = d.shift_x, ty = d.shift_y;
  double mean_grey;
  if (img.wide) {
    const float scale = 1.f / 65535.f;
    mean_grey = img.channels == 1
                    ? sample_planes<uint16_t, 1>(img.u16.data(), S, g, scale, tx, ty, mean_brightness, out)
                    : sample_planes<uint16_t, 3>(img.u16.data(), S, g, scale, tx, ty, mean_brightness, out);
  } else {
    const float scale = 1.f / 255.f;
    mean_grey = img.channels == 1 ? sample_planes<uint8_t, 1>(img.u8.data(), S, g, scale, tx, ty, mean_brightness, out)
                                  : sample_planes<uint8_t, 3>(img.u8.data(), S, g, scale, tx, ty, mean_brightness, out);
  }
  jitter.contrast_offset = float((1.0 - d.contrast) * mean_grey);

  // Pass 2: jitter and normalise; pixels the translation uncovered stay 0
  // before normalisation (the translation comes after the jitter). Planes go
  // from last to first so that a grey image's plane 0 is read before it is
  // overwritten.
  const int64_t plane = S * S;
  for (int64_t k = out_c - 1; k >= 0; --k) {
    const float inv_std = 1.f / p.std[size_t(k)], shift = -p.mean[size_t(k)] * inv_std;
    const float* in = out + (img.channels == 1 ? 0 : k) * plane;
    float* dst = out + k * plane;
    const int64_t x_lo = std::clamp<int64_t>(tx, 0, S), x_hi = std::clamp<int64_t>(S + tx, 0, S);
    for (int64_t oy = 0; oy < S; ++oy) {
      const int64_t y = oy - ty;
      float* row = dst + oy * S;
      if (y < 0 || y >= S) {
        std::fill(row, row + S, shift);
        continue;
      }
      const float* src_row = in + oy * S;
      std::fill(row, row + x_lo, shift);
      for (int64_t ox = x_lo; ox < x_hi; ++ox) row[ox] = jitter(src_row[ox]) * inv_std + shift;
      std::fill(row + x_hi, row + S, shift);
    }
  }
}

void augment_into(const ImageCache& c, int64_t row, const AugmentOptions& a, const Preprocess& p, uint64_t seed,
                  float* out) {
  MM_CHECK(row >= 0 && row < c.rows(), "augment: row " + std::to_string(row) + " out of range");
  MM_CHECK(p.input_size == c.size, "augment: the cache holds " + std::to_string(c.size) +
                                       " px images, the model takes " + std::to_string(p.input_size));
  apply_augment(c.images[size_t(row)], c.size, draw_augment(a, c.size, seed), p, out);
}

}  // namespace mm
