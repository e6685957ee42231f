#pragma once
// Image -> model input, driven by the model file's Preprocess metadata:
//   1. window: the Image's [window_low, window_high] -> [0, 1], clamped;
//   2. resize to input_size x input_size (the reference evaluation transform is
//      torchvision's Resize((S, S)) on a PIL image, so "bilinear" is PIL's
//      antialiased bilinear: a triangle filter whose support widens with the
//      downscale factor);
//   3. channels: grey -> 3 copies (or RGB -> grey for a 1-channel model);
//   4. normalize: (x - mean[c]) / std[c].
// The output is float32 C x S x S (one NCHW batch item).
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "data/image.h"
#include "model/model_file.h"

namespace mm {

enum class Interpolation {
  Bilinear,             // PIL BILINEAR (antialiased when shrinking): torchvision's default on PIL images
  Bicubic,              // PIL BICUBIC (a = -0.5, antialiased when shrinking)
  Nearest,              // PIL NEAREST: source pixel floor((x + 0.5) * in / out)
  BilinearNoAntialias,  // torch.nn.functional.interpolate(bilinear, align_corners=False, antialias=False)
};
// Accepts "bilinear", "bicubic", "nearest", "bilinear-no-antialias"; throws on others.
Interpolation interpolation_from_name(const std::string& name);
const char* interpolation_name(Interpolation m);

// The separable resize's filter along one axis: output position i is the sum over
// j < count[i] of weights[i * stride + j] * source[first[i] + j].
struct AxisWeights {
  std::vector<int64_t> first, count;
  std::vector<double> weights;  // out_size rows of `stride` entries
  int64_t stride = 0;
};
AxisWeights axis_weights(int64_t in_size, int64_t out_size, Interpolation method);

// Resizes an h x w image with c interleaved channels into dst (out_h x out_w x c).
// Matches Pillow's float ("F" mode) resize: separable, horizontal pass first,
// double accumulation, float intermediate.
void resize_pixels(const float* src, int64_t h, int64_t w, int64_t c, float* dst, int64_t out_h,
                   int64_t out_w, Interpolation method);
Image resize(const Image& img, int64_t out_h, int64_t out_w, Interpolation method);

// A copy with pixels mapped through the window to [0, 1] (window then set to [0, 1]).
Image apply_window(const Image& img);

// Throws mm::Error naming the file unless img has 1 or 3 channels, a size, and its pixels.
void check_preprocessable(const Image& img);

// The whole pipeline into dst, which holds mean.size() * S * S floats.
void preprocess_into(const Image& img, const Preprocess& p, float* dst);
// The same as a (C, S, S) tensor.
Tensor preprocess(const Image& img, const Preprocess& p);

}  // namespace mm
