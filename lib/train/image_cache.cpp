#include "train/image_cache.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "data/preprocess.h"

namespace mm {

size_t ImageCache::bytes() const {
  size_t n = 0;
  for (const CachedImage& c : images) n += c.u8.size() + c.u16.size() * sizeof(uint16_t);
  return n;
}

double ImageCache::failed_fraction() const {
  const size_t total = images.size() + failures.size();
  return total == 0 ? 0.0 : double(failures.size()) / double(total);
}

int resolve_thread_count(int threads) {
  return threads > 0 ? threads : std::max(1, int(std::thread::hardware_concurrency()));
}

bool needs_wide_storage(const Image& img) {
  if (!(img.window_high - img.window_low <= 255.0)) return true;
  for (float v : img.pixels)
    if (std::isfinite(v) && v != std::nearbyint(v)) return true;
  return false;
}

namespace {

template <class T>
void quantise(const std::vector<float>& unit, double levels, std::vector<T>& out) {
  out.resize(unit.size());
  for (size_t i = 0; i < unit.size(); ++i) out[i] = T(std::clamp(double(unit[i]), 0.0, 1.0) * levels + 0.5);
}

}  // namespace

CachedImage cache_image(const Image& img, int64_t size, int64_t in_chans, const std::string& interpolation) {
  MM_CHECK(img.channels == 1 || img.channels == 3,
           img.source_path + ": " + std::to_string(img.channels) + " channels (1 or 3 expected)");
  MM_CHECK(img.height > 0 && img.width > 0 && int64_t(img.pixels.size()) == img.numel(),
           img.source_path + ": empty image");
  MM_CHECK(in_chans == 1 || in_chans == 3,
           "image cache: the model takes 1 or 3 channels, not " + std::to_string(in_chans));
  const Image unit = apply_window(img);
  std::vector<float> sized(size_t(size * size * img.channels));
  resize_pixels(unit.pixels.data(), img.height, img.width, img.channels, sized.data(), size, size,
                interpolation_from_name(interpolation));
  CachedImage c;
  c.channels = img.channels;
  if (img.channels == 3 && in_chans == 1) {  // as mm::preprocess: luma after the resize
    std::vector<float> grey(size_t(size * size));
    for (size_t i = 0; i < grey.size(); ++i)
      grey[i] = 0.299f * sized[i * 3] + 0.587f * sized[i * 3 + 1] + 0.114f * sized[i * 3 + 2];
    sized.swap(grey);
    c.channels = 1;
  }
  c.wide = needs_wide_storage(img);
  if (c.wide)
    quantise(sized, 65535.0, c.u16);
  else
    quantise(sized, 255.0, c.u8);
  return c;
}

ImageCache build_image_cache(const Dataset& d, const std::vector<size_t>& sample_indices, const Preprocess& p,
                             int64_t in_chans, const ImageFileReader& read_file, int threads,
                             const std::function<void(int64_t, int64_t)>& progress, const ReadHints& hints) {
  MM_CHECK(p.input_size > 0, "image cache: input size must be positive");
  interpolation_from_name(p.interpolation);  // a bad name is the caller's error, not every sample's
  const int64_t total = int64_t(sample_indices.size());
  std::vector<std::optional<CachedImage>> cached(static_cast<size_t>(total));
  std::vector<std::string> reasons(static_cast<size_t>(total));

  std::atomic<int64_t> next{0}, done{0};
  std::mutex m;
  std::condition_variable finished;
  auto work = [&] {
    // mm::resize parallelises large images with OpenMP; here the parallelism is
    // across images, so each decoding thread keeps its OpenMP team to itself.
    omp_set_num_threads(1);
    for (int64_t i; (i = next.fetch_add(1)) < total;) {
      const size_t s = sample_indices[size_t(i)];
      try {
        MM_CHECK(s < d.samples.size(), "image cache: sample index " + std::to_string(s) + " out of range");
        CachedImage c = cache_image(load_image(d, s, read_file, hints), p.input_size, in_chans, p.interpolation);
        c.sample = s;
        c.label = d.samples[s].label;
        cached[size_t(i)] = std::move(c);
      } catch (const std::exception& e) {
        reasons[size_t(i)] = e.what();
      }
      if (done.fetch_add(1) + 1 == total) {
        std::lock_guard<std::mutex> lock(m);
        finished.notify_all();
      }
    }
  };
  std::vector<std::thread> pool;
  const int n_threads = int(std::min<int64_t>(resolve_thread_count(threads), std::max<int64_t>(total, 1)));
  for (int t = 0; t < n_threads; ++t) pool.emplace_back(work);
  std::exception_ptr progress_error;  // rethrown once the threads are joined
  {
    std::unique_lock<std::mutex> lock(m);
    int64_t reported = -1;
    while (done.load() < total && !progress_error) {
      finished.wait_for(lock, std::chrono::milliseconds(100));
      const int64_t now = done.load();
      if (!progress || now == reported || now == total) continue;
      try {
        progress(reported = now, total);
      } catch (...) {
        progress_error = std::current_exception();
        next.store(total);
      }
    }
  }
  for (std::thread& t : pool) t.join();
  if (progress_error) std::rethrow_exception(progress_error);
  if (progress) progress(total, total);

  ImageCache cache;
  cache.size = p.input_size;
  cache.out_channels = in_chans;
  for (int64_t i = 0; i < total; ++i) {
    const size_t s = sample_indices[size_t(i)];
    if (cached[size_t(i)])
      cache.images.push_back(std::move(*cached[size_t(i)]));
    else
      cache.failures.push_back({s, s < d.samples.size() ? d.samples[s].id : std::to_string(s), reasons[size_t(i)]});
  }
  return cache;
}

}  // namespace mm
