#pragma once
// mm-predict's batches on a GPU: model inputs made on the device from decoded
// images, and batches that run while the host fills the next one.
//
// The decode threads copy each image's pixels (physical units, as the readers
// give them) into page-locked host memory. A batch goes up in one copy per
// chunk of that memory; its window, resize, channel conversion and
// normalisation run on the GPU (cuda::preprocess_images: preprocess_into's
// arithmetic, to about a float ulp); then the model; then the logits come back
// into page-locked memory. The uploads run on a stream of their own, so that a
// batch's copy overlaps the previous batch's model; the rest is queued on the
// model's stream. The host only waits for a batch when it wants its logits.
//
// Two batches are in flight at most: the host fills one while the GPU runs the
// other. Moving the window and resize to the GPU leaves the decode threads only
// the file reading and pixel decoding (for 512x512 CT, about a third of the CPU
// time per file, docs/mm-predict.md), and the upload is the native-size image.
#include <cstdint>
#include <memory>

#include "core/tensor.h"
#include "data/image.h"
#include "model/cuda_model.h"
#include "model/model_file.h"

namespace mm {

class GpuBatches {
 public:
  // Throws mm::Error in builds without CUDA.
  GpuBatches(CudaMedMamba& engine, const Preprocess& preprocess, int64_t batch_size);
  ~GpuBatches();
  GpuBatches(const GpuBatches&) = delete;
  GpuBatches& operator=(const GpuBatches&) = delete;

  // Images larger than this many floats are windowed and resized on the CPU first
  // (make_small_enough), so that the page-locked memory of a batch stays bounded.
  static constexpr int64_t kMaxImageFloats = int64_t(2048) * 2048;
  // The image itself, or, when it has more than kMaxImageFloats pixel values, its
  // windowed and resized copy at the model's size (window [0, 1]), which gives the
  // same model input.
  static Image make_small_enough(Image img, const Preprocess& preprocess);

  // Room in the batch being filled for img's pixels (img.numel() floats,
  // page-locked; the caller copies them there before launch()). Takes its size,
  // channels and window; throws mm::Error for an image the GPU path cannot take
  // (channels other than 1 or 3, more than kMaxImageFloats values).
  float* add(const Image& img);
  int64_t filling() const;  // images in the batch being filled

  // The first batch's set-up, ahead of it: the model's eager pass and its CUDA
  // graph's capture, on a zero batch (cuBLAS's first plans and the kernels' lazy
  // loading are in these), and each slot's first page-locked chunk. About a fifth
  // of a second on an H200, which the decode threads spend reading the first files
  // when the caller runs this after starting them.
  void warm_up();

  // Queues the batch being filled (its pixels must be in place) and starts an
  // empty one. Waits first for the batch launched before the previous one, whose
  // memory the new batch reuses: call wait_oldest() for it before.
  void launch();
  int64_t in_flight() const;  // launched batches not yet waited for
  // Waits for the oldest launched batch. Returns its logits (images, classes),
  // float32 host memory valid until the next launch().
  Tensor wait_oldest();
  // The model inputs of the last launched batch (images, C, S, S), float32 on the
  // device, valid until the next launch(): for tests and debugging.
  Tensor inputs() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mm
