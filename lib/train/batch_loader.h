#pragma once
// Batches of augmented model inputs from an ImageCache, prepared on a pool of
// threads ahead of the caller.
//
//   BatchLoader loader(cache, AugmentOptions{}, preprocess, threads);
//   loader.start_epoch(epoch_permutation(cache.rows(), seed, epoch), 64, seed, epoch);
//   for (Batch b; loader.next(b);) train_step(b.images, b.labels);
//
// The pool fills up to `prefetch` batches while the caller trains on the one
// it holds. A batch's tensor lives in the loader's ring of buffers: it stays
// valid until the next call to next() or start_epoch(), and is overwritten
// after that (copy it to keep it).
//
// Sample r's pixels depend only on (cache row, options, seed, epoch, dataset
// sample index): the batches are bit-identical for any thread count, and an
// epoch resumed after k batches (start_epoch with the rows from k * batch_size
// on) continues with the same images as an uninterrupted one.
#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "model/model_file.h"
#include "train/augment.h"
#include "train/image_cache.h"

namespace mm {

// A permutation of 0..n-1 (Fisher-Yates on SplitMix64 keyed by seed and epoch).
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

struct Batch {
  Tensor images;                // (B, C, S, S) float32, normalised
  std::vector<int64_t> labels;  // B labels
  std::vector<int64_t> rows;    // B cache rows (cache.images[row].sample is the dataset sample)
  int64_t index = 0;            // the batch's number in the epoch
};

class BatchLoader {
 public:
  // threads: 0 for all cores. The cache must outlive the loader.
  BatchLoader(const ImageCache& cache, AugmentOptions augment, Preprocess preprocess, int threads, int prefetch = 2);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // Starts an epoch over the given cache rows in this order, in batches of
  // batch_size; the last batch is smaller when the rows do not divide evenly.
  // An epoch in progress is abandoned. Samples draw from sample_seed(seed, epoch, sample).
  void start_epoch(std::vector<int64_t> rows_in_order, int64_t batch_size, uint64_t seed, int64_t epoch);
  // The next batch, waiting for it if needed; false at the end of the epoch.
  // Rethrows an error from the pool.
  bool next(Batch& out);
  int64_t batches_in_epoch() const;
  int threads() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace mm
