#pragma once
// Training augmentation on cached images (image_cache.h), following the
// MedMamba recipe with torchvision's definitions, in this order:
//   1. random resized crop: RandomResizedCrop(S, scale=(crop_scale_min, 1),
//      ratio=(3/4, 4/3)): up to 10 draws of area and log-ratio, the box's
//      position uniform among integer positions; after 10 misses the centre
//      crop torchvision falls back to;
//   2. horizontal flip with probability 0.5;
//   3. rotation by an angle uniform in [-rotate_degrees, rotate_degrees],
//      counter-clockwise for positive angles, about the image centre, bilinear,
//      fill 0 (RandomRotation on a PIL image = PIL's Image.rotate);
//   4. colour jitter: ColorJitter(brightness, contrast): brightness factor b
//      uniform in [1-brightness, 1+brightness] gives clamp(b*x, 0, 1);
//      contrast factor c in [1-contrast, 1+contrast] gives
//      clamp(c*x + (1-c)*m, 0, 1), m the mean grey level of the whole image
//      (0.2989 R + 0.587 G + 0.114 B for colour); the two in random order, as
//      ColorJitter permutes its transforms;
//   5. translation: RandomAffine(0, translate=(t, t)): whole-pixel shifts
//      round(uniform(-t*S, t*S)) in x and y, fill 0;
//   6. normalisation with the Preprocess's mean and std (grey images copied
//      to every channel of a 3-channel model first).
//
// Steps 1-3 and 5 are one affine map from output pixel to cached pixel,
// sampled once with bilinear interpolation (edges clamped, points outside the
// image or outside the crop's rotated frame take the fill value, as PIL's
// affine transform does); torchvision resamples after each step. The crop is
// taken from the cached S x S image, not from the original file.
//
// Every random draw of a sample comes from SplitMix64 streams keyed by
// sample_seed(seed, epoch, sample index), one stream per step, so the result
// does not depend on the thread that computes it, on the other samples, or on
// which other steps are switched on.
#include <cstdint>
#include <string>

#include "core/random.h"
#include "model/model_file.h"
#include "train/image_cache.h"

namespace mm {

struct AugmentOptions {
  bool crop = true, flip = true, rotate = true, jitter = true, translate = true;
  float crop_scale_min = 0.7f;  // the crop's area fraction is uniform in [crop_scale_min, 1]
  float rotate_degrees = 15.f;
  float brightness = 0.1f, contrast = 0.2f;
  float translate_fraction = 0.1f;  // of the side, each direction
  float flip_probability = 0.5f;

  static AugmentOptions none();
  // "crop,flip,rotate,jitter,translate" (any subset, any order); "" or "none" for none.
  static AugmentOptions from_list(const std::string& list);
  std::string to_list() const;  // the switched-on steps in the order above; "none" when none
  bool any() const;
};

// 64-bit seed of one sample's draws in one epoch.
uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t sample_index);

struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};
// torchvision's RandomResizedCrop.get_params on a height x width image.
CropBox random_resized_crop_box(int64_t height, int64_t width, double scale_min, double scale_max, double ratio_min,
                                double ratio_max, SplitMix64& rng);

// The random parameters of one sample; a switched-off step keeps its identity value.
struct AugmentDraw {
  CropBox crop;  // the whole image when off
  bool flip = false;
  double angle_degrees = 0;
  int64_t shift_x = 0, shift_y = 0;  // output = input moved right / down by these
  double brightness = 1, contrast = 1;
  bool contrast_first = false;
};
AugmentDraw draw_augment(const AugmentOptions& a, int64_t size, uint64_t sample_seed);

// Writes the (C, S, S) float32 model input of one cached image under the draw;
// C = the Preprocess's channel count. No allocation.
void apply_augment(const CachedImage& img, int64_t size, const AugmentDraw& d, const Preprocess& p, float* out);

// draw_augment + apply_augment for row `row` of the cache.
void augment_into(const ImageCache& c, int64_t row, const AugmentOptions& a, const Preprocess& p, uint64_t sample_seed,
                  float* out);

}  // namespace mm
