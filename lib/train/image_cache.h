#pragma once
// The training input cache: every sample decoded once, windowed to [0, 1],
// resized to the model's side with the model's interpolation (mm::resize, as
// mm::preprocess does) and kept in memory as 8- or 16-bit integers, so that an
// epoch never touches the files again and augmentation samples small integer
// images.
//
// Storage per image (decided per image, so a folder mixing 8-bit JPEGs and
// 16-bit DICOMs keeps each in its own width):
//   - channels: 1 for a grey source or a 1-channel model (RGB becomes grey by
//     ITU-R 601-2 luma, as mm::preprocess), 3 for an RGB source and a 3-channel
//     model. Grey images stay 1 channel for a 3-channel model: the copies are
//     made when the batch is written, and the cache is 3x smaller.
//   - width: uint8 (round(v * 255)) when the source has at most 256 levels in
//     its window, i.e. its pixels are integers and window_high - window_low
//     <= 255 (8-bit PNG/JPEG/BMP/TIFF, MedMNIST, 8-bit DICOM); uint16
//     (round(v * 65535)) otherwise (12/16-bit DICOM, NIfTI, 16-bit or float
//     pictures, windows wider than 255 units). The rounding error is then at
//     most half a step of the window's own resolution.
//   - values after the resize are clamped to [0, 1] (bicubic can overshoot;
//     bilinear, the default, cannot).
//
// Unreadable samples are not fatal: each is recorded in `failures` with the
// reader's message and left out of the rows; the caller decides how many are
// too many (failed_fraction()).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "model/model_file.h"

namespace mm {

struct CachedImage {
  size_t sample = 0;          // index into Dataset::samples
  int64_t label = -1;         // Sample::label
  int channels = 1;           // 1 or 3, interleaved (H, W, C) like mm::Image
  bool wide = false;          // pixels in u16 (else u8)
  std::vector<uint8_t> u8;    // size * size * channels when !wide
  std::vector<uint16_t> u16;  // size * size * channels when wide
};

struct ImageCache {
  int64_t size = 0;                 // side S of every cached image
  int64_t out_channels = 0;         // the model's input channels (1 or 3)
  std::vector<CachedImage> images;  // one row per readable sample, in the order asked for
  struct Failure {
    size_t sample = 0;
    std::string id, reason;
  };
  std::vector<Failure> failures;  // in the order asked for

  int64_t rows() const { return int64_t(images.size()); }
  size_t bytes() const;  // pixel memory held
  // failures / (rows + failures); 0 when empty.
  double failed_fraction() const;
};

// Decodes d.samples[i] for each i in sample_indices on `threads` threads
// (0: all cores). read_file reads file samples (see load_image); in-memory
// samples (MedMNIST) need none. progress, if set, is called on the calling
// thread, about ten times a second and once at the end.
// hints go to read_file (draft decoding: ReadHints::draft_side).
ImageCache build_image_cache(const Dataset& d, const std::vector<size_t>& sample_indices, const Preprocess& p,
                             int64_t in_chans, const ImageFileReader& read_file, int threads,
                             const std::function<void(int64_t done, int64_t total)>& progress = {},
                             const ReadHints& hints = {});

// One image the way build_image_cache stores it (exposed for tests).
CachedImage cache_image(const Image& img, int64_t size, int64_t in_chans, const std::string& interpolation);

// True when the image needs 16 bits (see the rule above).
bool needs_wide_storage(const Image& img);

// `threads` if positive, else the number of cores.
int resolve_thread_count(int threads);

}  // namespace mm
