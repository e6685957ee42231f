// GpuBatches: see gpu_batches.h. Without CUDA the constructor throws.
#include "predict/gpu_batches.h"

#include "core/error.h"
#include "data/preprocess.h"

namespace mm {

Image GpuBatches::make_small_enough(Image img, const Preprocess& preprocess) {
  if (img.numel() <= kMaxImageFloats) return img;
  const int64_t s = preprocess.input_size;
  return resize(apply_window(img), s, s, interpolation_from_name(preprocess.interpolation));
}

}  // namespace mm

#ifdef MM_HAVE_CUDA

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <utility>
#include <vector>

#include "cuda_ops.h"

namespace mm {

namespace {

// Page-locked floats that never move once handed out (the decode threads copy into them).
struct PinnedChunk {
  float* host = nullptr;
  int64_t capacity = 0, used = 0;
  explicit PinnedChunk(int64_t floats)
      : host(static_cast<float*>(cuda::malloc_host_pinned(size_t(floats) * sizeof(float)))), capacity(floats) {}
  ~PinnedChunk() { cuda::free_host_pinned(host); }
  PinnedChunk(const PinnedChunk&) = delete;
  PinnedChunk& operator=(const PinnedChunk&) = delete;
};

float* device_floats(Tensor& t) { return static_cast<float*>(t.data()); }

// 64 MB: a batch of 128 512x512 CT slices fills two.
constexpr int64_t kChunkFloats = int64_t(16) << 20;

struct Slot {
  std::vector<std::unique_ptr<PinnedChunk>> chunks;
  struct Placed {
    size_t chunk;
    int64_t offset;  // floats, in the chunk
  };
  std::vector<Placed> placed;
  std::vector<cuda::PreprocessItem> items;  // pixel offsets filled at launch
  cuda::PreprocessItem* items_pinned = nullptr;  // the launched batch's items, uploaded from here
  float* logits_pinned = nullptr;
  // The slot's device copies of its pixels and items, filled on the upload stream.
  Tensor device_pixels, device_items;
  cuda::Event uploaded;  // its upload is complete (upload stream)
  cuda::Event consumed;  // its preprocessing has read the device copies (model stream)
  cuda::Event done;      // its logits are in logits_pinned (model stream)
  bool in_flight = false;
};

}  // namespace

struct GpuBatches::Impl {
  CudaMedMamba& engine;
  cuda::Stream stream;  // the model's: preprocessing, the model, the logits
  // Uploads run here, so that a batch's copy overlaps the previous batch's model.
  cuda::Stream upload = cuda::stream_create();
  Preprocess preprocess;
  Interpolation method;
  int64_t side, out_channels, batch_size, classes;
  Slot slots[2];
  int fill = 0;
  std::deque<std::pair<int, int64_t>> launched;  // slot, images
  int64_t last_launched_images = 0;
  // Device memory used on the model's stream only, which runs the batches one after another.
  Tensor rows_done, inputs;
  // Resize filters per (source size, identity), on the device: int32 first[S], int32
  // count[S], then double weights[S][stride].
  struct DeviceAxis {
    Tensor storage;
    cuda::ResizeAxisDevice axis;
  };
  std::map<std::pair<int64_t, bool>, DeviceAxis> axes;

  Impl(CudaMedMamba& e, const Preprocess& p, int64_t b)
      : engine(e), stream(e.stream()), preprocess(p), method(interpolation_from_name(p.interpolation)),
        side(p.input_size), out_channels(int64_t(p.mean.size())), batch_size(b), classes(e.config().num_classes) {
    MM_CHECK(out_channels == 1 || out_channels == 3, "GPU preprocessing: the model takes 1 or 3 channels");
    for (Slot& s : slots) {
      s.items_pinned = static_cast<cuda::PreprocessItem*>(
          cuda::malloc_host_pinned(size_t(batch_size) * sizeof(cuda::PreprocessItem)));
      s.logits_pinned = static_cast<float*>(cuda::malloc_host_pinned(size_t(batch_size * classes) * sizeof(float)));
    }
  }
  ~Impl() {
    try {
      sync_streams();  // nothing may still read the memory freed below
    } catch (...) {
    }
    cuda::stream_destroy(upload);
    for (Slot& s : slots) {
      cuda::free_host_pinned(s.items_pinned);
      cuda::free_host_pinned(s.logits_pinned);
    }
  }

  const cuda::ResizeAxisDevice& axis(int64_t in_size, bool identity) {
    auto it = axes.find({in_size, identity});
    if (it != axes.end()) return it->second.axis;
    AxisWeights w;
    if (identity) {
      w.stride = 1;
      for (int64_t i = 0; i < side; ++i) w.first.push_back(i);
      w.count.assign(size_t(side), 1);
      w.weights.assign(size_t(side), 1.0);
    } else {
      w = axis_weights(in_size, side, method);
    }
    const size_t ints = size_t(2 * side), bytes = ints * 4 + w.weights.size() * sizeof(double);
    std::vector<char> host(bytes);
    auto* first = reinterpret_cast<int32_t*>(host.data());
    for (int64_t i = 0; i < side; ++i) {
      first[i] = int32_t(w.first[size_t(i)]);
      first[side + i] = int32_t(w.count[size_t(i)]);
    }
    std::memcpy(host.data() + ints * 4, w.weights.data(), w.weights.size() * sizeof(double));
    DeviceAxis d;
    d.storage = Tensor::empty({int64_t((bytes + 7) / 8)}, DType::F64, Device::CUDA);
    cuda::copy_async(d.storage.data(), host.data(), bytes, stream);
    cuda::stream_sync(stream);  // `host` goes away; new sizes are rare
    char* base = static_cast<char*>(d.storage.data());
    d.axis.first = reinterpret_cast<const int32_t*>(base);
    d.axis.count = reinterpret_cast<const int32_t*>(base) + side;
    d.axis.weights = reinterpret_cast<const double*>(base + ints * 4);
    d.axis.stride = int32_t(w.stride);
    return axes.emplace(std::make_pair(in_size, identity), std::move(d)).first->second.axis;
  }

  void sync_streams() {
    cuda::stream_sync(upload);
    cuda::stream_sync(stream);
  }

  // A device buffer of at least n floats; growing it waits for the batches that may use it.
  void ensure(Tensor& t, int64_t floats) {
    const int64_t n = std::max<int64_t>(floats, 1);
    if (t.numel() >= n) return;
    sync_streams();
    t = Tensor();
    t = Tensor::zeros({n + n / 4}, DType::F32, Device::CUDA);
  }
};

GpuBatches::GpuBatches(CudaMedMamba& engine, const Preprocess& preprocess, int64_t batch_size)
    : impl_(std::make_unique<Impl>(engine, preprocess, batch_size)) {}

GpuBatches::~GpuBatches() = default;

float* GpuBatches::add(const Image& img) {
  Impl& m = *impl_;
  Slot& s = m.slots[m.fill];
  MM_CHECK(!s.in_flight, "GpuBatches::add: the batch this memory belongs to is still running (wait_oldest first)");
  MM_CHECK(int64_t(s.items.size()) < m.batch_size, "GpuBatches::add: the batch is full");
  check_preprocessable(img);
  const int64_t n = img.numel();
  MM_CHECK(n <= kMaxImageFloats, img.source_path + ": too large for the GPU batch (make_small_enough first)");
  size_t c = 0;
  while (c < s.chunks.size() && s.chunks[c]->capacity - s.chunks[c]->used < n) ++c;
  if (c == s.chunks.size()) s.chunks.push_back(std::make_unique<PinnedChunk>(std::max(n, kChunkFloats)));
  PinnedChunk& chunk = *s.chunks[c];
  s.placed.push_back({c, chunk.used});
  float* where = chunk.host + chunk.used;
  chunk.used += n;

  cuda::PreprocessItem it;
  it.height = int32_t(img.height);
  it.width = int32_t(img.width);
  it.channels = int32_t(img.channels);
  it.window_low = img.window_low;
  it.window_high = img.window_high;
  const bool identity = img.height == m.side && img.width == m.side;  // preprocess_into copies these
  it.rows = m.axis(img.height, identity);
  it.cols = m.axis(img.width, identity);
  s.items.push_back(it);
  return where;
}

int64_t GpuBatches::filling() const { return int64_t(impl_->slots[impl_->fill].items.size()); }
int64_t GpuBatches::in_flight() const { return int64_t(impl_->launched.size()); }

void GpuBatches::warm_up() {
  Impl& m = *impl_;
  MM_CHECK(m.launched.empty(), "GpuBatches::warm_up: batches are running");
  m.ensure(m.inputs, m.batch_size * m.out_channels * m.side * m.side);  // zeros
  const Tensor zeros =
      Tensor::wrap(m.inputs.data(), {m.batch_size, m.out_channels, m.side, m.side}, DType::F32, Device::CUDA);
  for (int pass = 0; pass < 2; ++pass) (void)m.engine.forward_device(zeros);  // eager, then captured
  for (Slot& s : m.slots)
    if (s.chunks.empty()) s.chunks.push_back(std::make_unique<PinnedChunk>(kChunkFloats));
  cuda::stream_sync(m.stream);
}

void GpuBatches::launch() {
  Impl& m = *impl_;
  Slot& s = m.slots[m.fill];
  const int64_t n = int64_t(s.items.size());
  MM_CHECK(n > 0, "GpuBatches::launch: an empty batch");
  // Where each chunk's pixels go on the device, and each item's vertical-pass scratch.
  std::vector<int64_t> chunk_at(s.chunks.size());
  int64_t pixel_floats = 0;
  for (size_t c = 0; c < s.chunks.size(); ++c) {
    chunk_at[c] = pixel_floats;
    pixel_floats += s.chunks[c]->used;
  }
  int64_t rows_floats = 0, max_rows = 0;
  for (size_t i = 0; i < s.items.size(); ++i) {
    cuda::PreprocessItem& it = s.items[i];
    it.pixels = chunk_at[s.placed[i].chunk] + s.placed[i].offset;
    it.rows_done = rows_floats;
    const int64_t r = m.side * it.width * it.channels;
    rows_floats += r;
    max_rows = std::max(max_rows, r);
  }
  m.ensure(s.device_pixels, pixel_floats);
  m.ensure(s.device_items, int64_t((size_t(m.batch_size) * sizeof(cuda::PreprocessItem) + 3) / 4));
  m.ensure(m.rows_done, rows_floats);
  m.ensure(m.inputs, m.batch_size * m.out_channels * m.side * m.side);

  // Upload, once the batch before that used this slot has read its device copies.
  s.consumed.wait_in(m.upload);
  for (size_t c = 0; c < s.chunks.size(); ++c)
    if (s.chunks[c]->used > 0)
      cuda::copy_async(device_floats(s.device_pixels) + chunk_at[c], s.chunks[c]->host,
                       size_t(s.chunks[c]->used) * sizeof(float), m.upload);
  std::copy(s.items.begin(), s.items.end(), s.items_pinned);
  cuda::copy_async(s.device_items.data(), s.items_pinned, size_t(n) * sizeof(cuda::PreprocessItem), m.upload);
  s.uploaded.record(m.upload);
  s.uploaded.wait_in(m.stream);

  cuda::PreprocessArgs a;
  a.items = static_cast<const cuda::PreprocessItem*>(s.device_items.data());
  a.n = n;
  a.pixels = device_floats(s.device_pixels);
  a.rows_done = device_floats(m.rows_done);
  a.out = device_floats(m.inputs);
  a.max_rows_done = max_rows;
  a.side = int32_t(m.side);
  a.out_channels = int32_t(m.out_channels);
  for (int64_t c = 0; c < m.out_channels; ++c) {
    a.mean[c] = m.preprocess.mean[size_t(c)];
    a.inv_std[c] = 1.f / m.preprocess.std[size_t(c)];
  }
  cuda::preprocess_images(a, m.stream);
  s.consumed.record(m.stream);
  // A short (last) batch runs at the full batch size too, its other rows left as they
  // are: the model keeps one shape, so one CUDA graph and no reallocation, and in eval
  // mode no row affects another.
  const Tensor logits = m.engine.forward_device(
      Tensor::wrap(m.inputs.data(), {m.batch_size, m.out_channels, m.side, m.side}, DType::F32, Device::CUDA));
  cuda::copy_async(s.logits_pinned, logits.data(), size_t(n * m.classes) * sizeof(float), m.stream);
  s.done.record(m.stream);
  s.in_flight = true;
  m.launched.push_back({m.fill, n});
  m.last_launched_images = n;
  m.fill ^= 1;
}

Tensor GpuBatches::wait_oldest() {
  Impl& m = *impl_;
  MM_CHECK(!m.launched.empty(), "GpuBatches::wait_oldest: no batch is running");
  const auto [slot, n] = m.launched.front();
  m.launched.pop_front();
  Slot& s = m.slots[slot];
  s.done.synchronize();
  s.in_flight = false;
  s.items.clear();
  s.placed.clear();
  for (auto& c : s.chunks) c->used = 0;
  return Tensor::wrap(s.logits_pinned, {n, m.classes});
}

Tensor GpuBatches::inputs() const {
  const Impl& m = *impl_;
  MM_CHECK(m.last_launched_images > 0, "GpuBatches::inputs: nothing was launched");
  return Tensor::wrap(const_cast<void*>(m.inputs.data()), {m.last_launched_images, m.out_channels, m.side, m.side},
                      DType::F32, Device::CUDA);
}

}  // namespace mm

#else  // no CUDA

namespace mm {

struct GpuBatches::Impl {};
GpuBatches::GpuBatches(CudaMedMamba&, const Preprocess&, int64_t) { throw Error("GpuBatches: built without CUDA"); }
GpuBatches::~GpuBatches() = default;
float* GpuBatches::add(const Image&) { throw Error("GpuBatches: built without CUDA"); }
int64_t GpuBatches::filling() const { return 0; }
int64_t GpuBatches::in_flight() const { return 0; }
void GpuBatches::warm_up() { throw Error("GpuBatches: built without CUDA"); }
void GpuBatches::launch() { throw Error("GpuBatches: built without CUDA"); }
Tensor GpuBatches::wait_oldest() { throw Error("GpuBatches: built without CUDA"); }
Tensor GpuBatches::inputs() const { throw Error("GpuBatches: built without CUDA"); }

}  // namespace mm

#endif  // MM_HAVE_CUDA
