// Model inputs made on the GPU (GpuBatches, kernels/preprocess_kernels.cu) against the
// CPU's preprocess_into (itself checked against Pillow): every method, grey and RGB,
// shrinking, enlarging and same-size images, 3- and 1-channel models, window steps
// and NaNs, and images too large for the GPU path (resized on the CPU first).
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "data/preprocess.h"
#include "model/cuda_model.h"
#include "model/medmamba.h"
#include "predict/gpu_batches.h"
#include "test_cuda_util.h"

using namespace mm;

namespace {

Image random_image(uint64_t seed, int64_t h, int64_t w, int64_t c, double lo, double hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> value(float(lo - 0.3 * (hi - lo)), float(hi + 0.3 * (hi - lo)));
  Image img;
  img.height = h;
  img.width = w;
  img.channels = c;
  img.pixels.resize(size_t(h * w * c));
  for (float& v : img.pixels) v = value(rng);
  img.window_low = lo;
  img.window_high = hi;
  img.source_path = "random-" + std::to_string(seed);
  return img;
}

std::vector<Image> test_images() {
  std::vector<Image> out;
  out.push_back(random_image(1, 512, 512, 1, -160, 240));  // a CT slice's size and window
  out.push_back(random_image(2, 97, 131, 1, 0, 255));      // enlarged
  out.push_back(random_image(3, 64, 64, 1, 10, 10));       // the model's size: copied; a window step
  out.back().pixels[5] = NAN;
  out.back().pixels[77] = NAN;
  out.push_back(random_image(4, 300, 200, 3, 0, 255));  // RGB, shrunk
  out.push_back(random_image(5, 64, 64, 3, 0, 1));      // RGB, the model's size
  out.push_back(random_image(6, 64, 300, 1, -1, 1));    // one axis the model's size
  out.push_back(random_image(7, 2100, 2100, 1, 0, 4095));  // more than kMaxImageFloats: resized on the CPU
  return out;
}

MedMamba small_model(int64_t in_chans) {
  ModelConfig cfg;
  cfg.dims = {8, 16, 32, 64};
  cfg.depths = {1, 1, 1, 1};
  cfg.num_classes = 3;
  cfg.image_size = 64;
  cfg.in_chans = in_chans;
  MedMamba m(cfg);
  m.init_reference(3);
  return m;
}

}  // namespace

TEST_CASE("cuda preprocess: GPU model inputs equal preprocess_into, every method, grey and RGB, 3 and 1 channels") {
  MM_REQUIRE_GPU_OR_SKIP();
  for (int64_t channels : {3, 1}) {
    MedMamba cpu = small_model(channels);
    CudaModelOptions exact;
    exact.precision = Precision::F32;
    exact.allow_tf32 = false;
    CudaMedMamba engine(cpu, exact);
    for (const char* method : {"bilinear", "bicubic", "nearest", "bilinear-no-antialias"}) {
      CAPTURE(channels);
      CAPTURE(method);
      Preprocess p;
      p.input_size = 64;
      p.interpolation = method;
      p.mean.assign(size_t(channels), 0.45f);
      p.std.assign(size_t(channels), 0.226f);
      const std::vector<Image> images = test_images();
      GpuBatches gpu(engine, p, int64_t(images.size()));
      for (const Image& original : images) {
        const Image img = GpuBatches::make_small_enough(original, p);
        std::memcpy(gpu.add(img), img.pixels.data(), img.pixels.size() * sizeof(float));
      }
      gpu.launch();
      const Tensor logits = gpu.wait_oldest();
      const Tensor got = gpu.inputs().to(Device::CPU);
      const int64_t item = channels * 64 * 64;
      std::vector<float> want(static_cast<size_t>(item));
      for (size_t i = 0; i < images.size(); ++i) {
        CAPTURE(images[i].source_path);
        preprocess_into(images[i], p, want.data());
        double worst = 0;
        for (int64_t j = 0; j < item; ++j) worst = std::max(worst, double(std::fabs(got.f32()[int64_t(i) * item + j] - want[size_t(j)])));
        // One float ulp of the resized value, divided by std; the too-large image is
        // resized horizontally first on the CPU, another rounding order.
        CHECK(worst <= (images[i].numel() > GpuBatches::kMaxImageFloats ? 2e-6 : 1e-6));
        if (worst > 0) MESSAGE(images[i].source_path << ": largest difference " << worst);
        // The logits of the batch are the model's on these inputs.
        const Tensor one = cpu.forward(Tensor::wrap(want.data(), {1, channels, 64, 64}), false);
        for (int64_t k = 0; k < 3; ++k)
          CHECK(logits.f32()[int64_t(i) * 3 + k] == doctest::Approx(one.f32()[k]).epsilon(1e-4));
      }
    }
  }
}

TEST_CASE("cuda preprocess: two batches in flight, partial last batch, memory reused, after a warm-up") {
  MM_REQUIRE_GPU_OR_SKIP();
  MedMamba cpu = small_model(3);
  CudaModelOptions exact;
  exact.precision = Precision::F32;
  exact.allow_tf32 = false;
  CudaMedMamba engine(cpu, exact);
  Preprocess p;
  p.input_size = 64;
  GpuBatches gpu(engine, p, 4);
  gpu.warm_up();  // the batches below replay the graph it captured
  std::vector<std::vector<float>> got;
  const int64_t n = 11;  // batches of 4, 4 and 3
  for (int64_t i = 0; i < n; ++i) {
    const Image img = random_image(100 + uint64_t(i), 80 + i, 90, i % 2 ? 3 : 1, 0, 255);
    std::memcpy(gpu.add(img), img.pixels.data(), img.pixels.size() * sizeof(float));
    if (gpu.filling() == 4 || i == n - 1) {
      gpu.launch();
      if (gpu.in_flight() == 2 || i == n - 1)
        while (gpu.in_flight() > (i == n - 1 ? 0 : 1)) {
          const Tensor l = gpu.wait_oldest();
          for (int64_t r = 0; r < l.dim(0); ++r) got.emplace_back(l.f32() + r * 3, l.f32() + r * 3 + 3);
        }
    }
  }
  REQUIRE(int64_t(got.size()) == n);
  for (int64_t i = 0; i < n; ++i) {
    CAPTURE(i);
    const Image img = random_image(100 + uint64_t(i), 80 + i, 90, i % 2 ? 3 : 1, 0, 255);
    const Tensor one = cpu.forward(preprocess(img, p).reshape({1, 3, 64, 64}), false);
    for (int64_t k = 0; k < 3; ++k) CHECK(got[size_t(i)][size_t(k)] == doctest::Approx(one.f32()[k]).epsilon(1e-4));
  }
  CHECK_THROWS_WITH_AS(gpu.wait_oldest(), doctest::Contains("no batch is running"), Error);
  Image rgba = random_image(9, 10, 10, 1, 0, 1);
  rgba.channels = 4;
  CHECK_THROWS_WITH_AS(gpu.add(rgba), doctest::Contains("1 or 3 channels"), Error);
}
