#include "train/scoring.h"

#include <numeric>

#include "predict/prediction.h"  // softmax_into
#include "ops/cross_entropy.h"
#include "train/batch_loader.h"

namespace mm {

CacheScores score_cache(Model& model, const ImageCache& cache, const Preprocess& preprocess, int64_t batch_size,
                        int threads) {
  const int64_t K = model.config().num_classes;
  CacheScores out;
  out.scores.num_classes = K;
  BatchLoader loader(cache, AugmentOptions::none(), preprocess, threads);
  std::vector<int64_t> rows(static_cast<size_t>(cache.rows()));
  std::iota(rows.begin(), rows.end(), 0);
  loader.start_epoch(rows, batch_size, /*seed=*/0, /*epoch=*/0);
  double loss_sum = 0;
  std::vector<double> p(static_cast<size_t>(K));
  for (Batch b; loader.next(b);) {
    const int64_t B = int64_t(b.labels.size());
    Tensor logits = model.forward(b.images, /*train=*/false);
    loss_sum += double(cross_entropy_forward(nullptr, logits.f32(), b.labels.data(), B, K)) * double(B);
    for (int64_t i = 0; i < B; ++i) {
      softmax_into(logits.f32() + i * K, K, p.data());
      out.scores.probabilities.insert(out.scores.probabilities.end(), p.begin(), p.end());
      out.scores.labels.push_back(b.labels[size_t(i)]);
    }
  }
  out.loss = cache.rows() > 0 ? loss_sum / double(cache.rows()) : 0.0;
  return out;
}

}  // namespace mm
