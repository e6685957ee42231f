#include "ops/cross_entropy.h"

#include <cmath>
#include <string>

#include "core/error.h"

namespace mm {

float cross_entropy_forward(float* probs, const float* logits, const int64_t* labels, int64_t B,
                            int64_t K) {
  double total = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    MM_CHECK(labels[b] >= 0 && labels[b] < K,
             "label " + std::to_string(labels[b]) + " out of range for " + std::to_string(K) + " classes");
    const float* z = logits + b * K;
    float mx = z[0];
    for (int64_t k = 1; k < K; ++k) mx = std::max(mx, z[k]);
    double sum = 0.0;
    for (int64_t k = 0; k < K; ++k) sum += std::exp(double(z[k]) - mx);
    const double log_sum = std::log(sum) + mx;
    total += log_sum - z[labels[b]];
    if (probs)
      for (int64_t k = 0; k < K; ++k) probs[b * K + k] = float(std::exp(double(z[k]) - log_sum));
  }
  return float(total / double(B));
}

void cross_entropy_backward(float* dlogits, const float* probs, const int64_t* labels, int64_t B,
                            int64_t K, float dloss) {
  const float scale = dloss / float(B);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k)
      dlogits[b * K + k] += scale * (probs[b * K + k] - (k == labels[b] ? 1.f : 0.f));
}

}  // namespace mm
