#include "ops/cross_entropy.h"

#include <cmath>
#include <string>

#include "core/error.h"

namespace mm {

static double weight_of(const CrossEntropyOptions& o, int64_t k) {
  return o.class_weights ? double(o.class_weights[k]) : 1.0;
}

// W = sum_b w[y_b], the mean's denominator.
static double weight_total(const int64_t* labels, int64_t B, const CrossEntropyOptions& o) {
  double W = 0.0;
  for (int64_t b = 0; b < B; ++b) W += weight_of(o, labels[b]);
  return W;
}

float cross_entropy_forward(float* probs, const float* logits, const int64_t* labels, int64_t B,
                            int64_t K, const CrossEntropyOptions& o) {
  const double eps = o.label_smoothing;
  double nll = 0.0, smooth = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    MM_CHECK(labels[b] >= 0 && labels[b] < K,
             "label " + std::to_string(labels[b]) + " out of range for " + std::to_string(K) + " classes");
    const float* z = logits + b * K;
    float mx = z[0];
    for (int64_t k = 1; k < K; ++k) mx = std::max(mx, z[k]);
    double sum = 0.0;
    for (int64_t k = 0; k < K; ++k) sum += std::exp(double(z[k]) - mx);
    const double log_sum = std::log(sum) + mx;
    nll += weight_of(o, labels[b]) * (log_sum - z[labels[b]]);
    if (eps > 0.0)
      for (int64_t k = 0; k < K; ++k) smooth += weight_of(o, k) * (log_sum - z[k]);
    if (probs)
      for (int64_t k = 0; k < K; ++k) probs[b * K + k] = float(std::exp(double(z[k]) - log_sum));
  }
  const double W = weight_total(labels, B, o);
  return float(((1.0 - eps) * nll + eps / double(K) * smooth) / W);
}

// With t[b,k] = (1-eps) w[y_b] [k == y_b] + eps/K w[k], the loss is
// -sum_bk t[b,k] logp[b,k] / W, so dz[b,j] = (p[b,j] * sum_k t[b,k] - t[b,j]) / W.
void cross_entropy_backward(float* dlogits, const float* probs, const int64_t* labels, int64_t B,
                            int64_t K, float dloss, const CrossEntropyOptions& o) {
  const double eps = o.label_smoothing;
  const double scale = double(dloss) / weight_total(labels, B, o);
  double smooth_total = 0.0;  // sum_k w[k]
  for (int64_t k = 0; k < K; ++k) smooth_total += weight_of(o, k);
  for (int64_t b = 0; b < B; ++b) {
    const double wy = weight_of(o, labels[b]);
    const double t_sum = (1.0 - eps) * wy + eps / double(K) * smooth_total;
    for (int64_t k = 0; k < K; ++k) {
      const double t = (k == labels[b] ? (1.0 - eps) * wy : 0.0) + eps / double(K) * weight_of(o, k);
      dlogits[b * K + k] += float(scale * (double(probs[b * K + k]) * t_sum - t));
    }
  }
}

}  // namespace mm
