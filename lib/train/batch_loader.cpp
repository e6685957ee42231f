#include "train/batch_loader.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <numeric>
#include <thread>

namespace mm {

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  return seeded_permutation(n, sample_seed(seed, epoch, -1));  // keyed like the sample seeds, with an index no sample has
}

// Work is one sample: task t is slot t % B of batch t / B. Batch b lives in
// ring buffer b % ring; a worker may fill batch b while b < handed + ring - 1,
// because the caller still holds batch handed - 1.
struct BatchLoader::State {
  const ImageCache& cache;
  AugmentOptions augment;
  Preprocess preprocess;
  int64_t per_image = 0;

  std::mutex m;
  std::condition_variable work_ready, batch_ready;
  bool stop = false;
  std::vector<Tensor> ring;
  std::vector<int64_t> done;  // samples finished, per ring buffer
  std::vector<int64_t> rows;
  int64_t batch_size = 1, num_batches = 0, next_task = 0, total_tasks = 0, handed = 0, in_flight = 0;
  uint64_t seed = 0;
  int64_t epoch = 0;
  std::exception_ptr error;
  std::vector<std::thread> pool;

  State(const ImageCache& c, AugmentOptions a, Preprocess p) : cache(c), augment(a), preprocess(std::move(p)) {}

  int64_t batch_length(int64_t b) const { return std::min(batch_size, int64_t(rows.size()) - b * batch_size); }
  bool may_start() const {
    return next_task < total_tasks && next_task / batch_size < handed + int64_t(ring.size()) - 1;
  }

  void work() {
    std::unique_lock<std::mutex> lock(m);
    for (;;) {
      work_ready.wait(lock, [&] { return stop || may_start(); });
      if (stop) return;
      const int64_t t = next_task++, b = t / batch_size;
      const int64_t row = rows[size_t(t)];
      float* dst = ring[size_t(b) % ring.size()].f32() + (t % batch_size) * per_image;
      const uint64_t s = sample_seed(seed, epoch, int64_t(cache.images[size_t(row)].sample));
      ++in_flight;
      lock.unlock();
      std::exception_ptr failed;
      try {
        augment_into(cache, row, augment, preprocess, s, dst);
      } catch (...) {
        failed = std::current_exception();
      }
      lock.lock();
      --in_flight;
      if (failed && !error) error = failed;
      if (++done[size_t(b) % ring.size()] == batch_length(b) || in_flight == 0) batch_ready.notify_all();
    }
  }
};

BatchLoader::BatchLoader(const ImageCache& cache, AugmentOptions augment, Preprocess preprocess, int threads,
                         int prefetch)
    : state_(std::make_unique<State>(cache, augment, std::move(preprocess))) {
  MM_CHECK(prefetch >= 1, "batch loader: prefetch must be at least 1");
  MM_CHECK(state_->preprocess.input_size == cache.size, "batch loader: the cache holds " + std::to_string(cache.size) +
                                                            " px images, the model takes " +
                                                            std::to_string(state_->preprocess.input_size));
  const int64_t channels = int64_t(state_->preprocess.mean.size());
  MM_CHECK(channels == cache.out_channels, "batch loader: the cache was built for " +
                                               std::to_string(cache.out_channels) +
                                               " channels, the preprocessing has " + std::to_string(channels));
  state_->per_image = channels * cache.size * cache.size;
  state_->ring.resize(size_t(prefetch) + 1);
  state_->done.assign(state_->ring.size(), 0);
  for (int t = 0; t < resolve_thread_count(threads); ++t) state_->pool.emplace_back([s = state_.get()] { s->work(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(state_->m);
    state_->stop = true;
  }
  state_->work_ready.notify_all();
  for (std::thread& t : state_->pool) t.join();
}

void BatchLoader::start_epoch(std::vector<int64_t> rows_in_order, int64_t batch_size, uint64_t seed, int64_t epoch) {
  MM_CHECK(batch_size > 0, "batch loader: batch size must be positive");
  for (int64_t r : rows_in_order)
    MM_CHECK(r >= 0 && r < state_->cache.rows(), "batch loader: row " + std::to_string(r) + " is not in the cache");
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.m);
  s.total_tasks = s.next_task;  // abandon the epoch in progress: no new work, wait for the started samples
  s.batch_ready.wait(lock, [&] { return s.in_flight == 0; });
  const Shape shape{batch_size, int64_t(s.preprocess.mean.size()), s.cache.size, s.cache.size};
  if (s.batch_size != batch_size || !s.ring[0].defined() || s.ring[0].numel() == 0)
    for (Tensor& t : s.ring) t = Tensor::empty(shape);
  s.rows = std::move(rows_in_order);
  s.batch_size = batch_size;
  s.num_batches = (int64_t(s.rows.size()) + batch_size - 1) / batch_size;
  s.seed = seed;
  s.epoch = epoch;
  s.next_task = 0;
  s.total_tasks = int64_t(s.rows.size());
  s.handed = 0;
  s.error = nullptr;
  std::fill(s.done.begin(), s.done.end(), 0);
  lock.unlock();
  s.work_ready.notify_all();
}

bool BatchLoader::next(Batch& out) {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.m);
  if (s.handed >= s.num_batches) return false;
  const int64_t b = s.handed, n = s.batch_length(b);
  const size_t slot = size_t(b) % s.ring.size();
  s.batch_ready.wait(lock, [&] { return s.done[slot] == n || s.error; });
  if (s.error) std::rethrow_exception(s.error);
  const Tensor& buffer = s.ring[slot];
  out.images = n == s.batch_size ? buffer : buffer.slice_view(0, {n, buffer.dim(1), buffer.dim(2), buffer.dim(3)});
  out.rows.assign(s.rows.begin() + b * s.batch_size, s.rows.begin() + b * s.batch_size + n);
  out.labels.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) out.labels[size_t(i)] = s.cache.images[size_t(out.rows[size_t(i)])].label;
  out.index = b;
  s.done[slot] = 0;
  ++s.handed;
  lock.unlock();
  s.work_ready.notify_all();
  return true;
}

int64_t BatchLoader::batches_in_epoch() const {
  std::lock_guard<std::mutex> lock(state_->m);
  return state_->num_batches;
}

int BatchLoader::threads() const { return int(state_->pool.size()); }

}  // namespace mm
