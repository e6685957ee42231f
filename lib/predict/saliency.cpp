#include "predict/saliency.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/png_writer.h"

namespace mm {

namespace {

// Separable Gaussian blur of a side x side map, zero beyond the edges.
std::vector<float> blurred(const float* map, int64_t side, double sigma) {
  const int64_t radius = int64_t(std::ceil(3 * sigma));
  std::vector<double> kernel(size_t(2 * radius + 1));
  for (int64_t i = -radius; i <= radius; ++i) kernel[size_t(i + radius)] = std::exp(-0.5 * i * i / (sigma * sigma));
  double total = 0;
  for (double k : kernel) total += k;
  for (double& k : kernel) k /= total;
  std::vector<float> tmp(size_t(side * side)), out(size_t(side * side));
  for (int pass = 0; pass < 2; ++pass) {
    const float* src = pass == 0 ? map : tmp.data();
    float* dst = pass == 0 ? tmp.data() : out.data();
    for (int64_t y = 0; y < side; ++y)
      for (int64_t x = 0; x < side; ++x) {
        double sum = 0;
        for (int64_t i = -radius; i <= radius; ++i) {
          const int64_t yy = pass == 0 ? y : y + i, xx = pass == 0 ? x + i : x;
          if (yy >= 0 && yy < side && xx >= 0 && xx < side) sum += kernel[size_t(i + radius)] * src[yy * side + xx];
        }
        dst[y * side + x] = float(sum);
      }
  }
  return out;
}

// Google's "turbo" colour map, as its published polynomial approximation; t in [0, 1].
void turbo(double t, double rgb[3]) {
  rgb[0] = 0.13572138 + t * (4.61539260 + t * (-42.66032258 + t * (132.13108234 + t * (-152.94239396 + t * 59.28637943))));
  rgb[1] = 0.09140261 + t * (2.19418839 + t * (4.84296658 + t * (-14.18503333 + t * (4.27729857 + t * 2.82956604))));
  rgb[2] = 0.10667330 + t * (12.64194608 + t * (-60.58204836 + t * (110.36276771 + t * (-89.90310912 + t * 27.34824973))));
}

uint8_t to_byte(double v) { return uint8_t(std::lround(std::clamp(v, 0.0, 1.0) * 255.0)); }

}  // namespace

Tensor gradient_times_input(MedMamba& model, const Tensor& images, const std::vector<int64_t>& classes) {
  const int64_t b = images.dim(0), c = images.dim(1), side = images.dim(2), k = model.config().num_classes;
  MM_CHECK(int64_t(classes.size()) == b, "saliency: one class per image");
  model.forward(images, /*train=*/false, /*keep_for_backward=*/true);
  Tensor dlogits = Tensor::zeros({b, k});
  for (int64_t i = 0; i < b; ++i) {
    MM_CHECK(classes[size_t(i)] >= 0 && classes[size_t(i)] < k, "saliency: class out of range");
    dlogits.f32()[i * k + classes[size_t(i)]] = 1.0f;  // images are independent in eval mode
  }
  const Tensor dimages = model.backward(dlogits, /*want_input_grad=*/true);
  Tensor maps = Tensor::zeros({b, side, side});
  const int64_t plane = side * side;
  for (int64_t i = 0; i < b; ++i)
    for (int64_t ch = 0; ch < c; ++ch) {
      const float* x = images.f32() + (i * c + ch) * plane;
      const float* g = dimages.f32() + (i * c + ch) * plane;
      float* m = maps.f32() + i * plane;
      for (int64_t p = 0; p < plane; ++p) m[p] += x[p] * g[p];
    }
  return maps;
}

std::vector<uint8_t> saliency_overlay_rgb(const float* input, const float* map, int64_t side, const Preprocess& p) {
  const int64_t channels = int64_t(p.mean.size()), plane = side * side;
  std::vector<float> evidence(static_cast<size_t>(plane));
  for (int64_t i = 0; i < plane; ++i) evidence[size_t(i)] = std::max(map[i], 0.0f);
  const std::vector<float> heat = blurred(evidence.data(), side, std::max(1.0, double(side) / 112.0));
  std::vector<float> sorted = heat;
  const size_t q = std::min(sorted.size() - 1, size_t(0.995 * double(sorted.size())));
  std::nth_element(sorted.begin(), sorted.begin() + long(q), sorted.end());
  const double scale = sorted[q] > 0 ? sorted[q] : *std::max_element(heat.begin(), heat.end());

  std::vector<uint8_t> rgb(size_t(plane * 2 * 3));
  for (int64_t y = 0; y < side; ++y)
    for (int64_t x = 0; x < side; ++x) {
      const int64_t i = y * side + x;
      double base[3];
      for (int ch = 0; ch < 3; ++ch) {
        const int64_t src = std::min<int64_t>(ch, channels - 1);  // a 1-channel input is grey
        base[ch] = std::clamp(double(input[src * plane + i]) * p.std[size_t(src)] + p.mean[size_t(src)], 0.0, 1.0);
      }
      const double a = scale > 0 ? std::clamp(double(heat[size_t(i)]) / scale, 0.0, 1.0) : 0.0;
      double colour[3];
      turbo(a, colour);
      const double alpha = 0.65 * a;
      uint8_t* left = rgb.data() + (y * 2 * side + x) * 3;
      uint8_t* right = left + side * 3;
      for (int ch = 0; ch < 3; ++ch) {
        left[ch] = to_byte(base[ch]);
        right[ch] = to_byte((1 - alpha) * base[ch] + alpha * colour[ch]);
      }
    }
  return rgb;
}

void write_saliency_png(const std::string& path, const float* input, const float* map, int64_t side,
                        const Preprocess& p) {
  const std::vector<uint8_t> rgb = saliency_overlay_rgb(input, map, side, p);
  // Small model inputs (64 or 96 px) are enlarged by whole pixels to at least
  // 224 px high, so that the picture can be read without zooming.
  const int64_t f = (224 + side - 1) / side, w = 2 * side;
  std::vector<uint8_t> big(size_t(w * f * side * f * 3));
  for (int64_t y = 0; y < side * f; ++y)
    for (int64_t x = 0; x < w * f; ++x)
      for (int c = 0; c < 3; ++c) big[size_t((y * w * f + x) * 3 + c)] = rgb[size_t(((y / f) * w + x / f) * 3 + c)];
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  write_png(path, big.data(), w * f, side * f, 3);
}

}  // namespace mm
