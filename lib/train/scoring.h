#pragma once
// A model scored on cached images without augmentation: validation after each
// epoch and the test split at the end of a run.
#include <cstdint>

#include "eval/metrics.h"
#include "model/model.h"
#include "model/model_file.h"
#include "train/image_cache.h"

namespace mm {

struct CacheScores {
  ScoredSamples scores;  // softmax probabilities, the cache's labels, in cache row order
  double loss = 0;       // mean cross-entropy (no class weights, no smoothing)
};

// Eval-mode forward passes in batches of batch_size; threads prepare the batches.
CacheScores score_cache(Model& model, const ImageCache& cache, const Preprocess& preprocess, int64_t batch_size,
                        int threads);

}  // namespace mm
