#include "predict/prediction.h"

#include <algorithm>
#include <cmath>

namespace mm {

const char* prediction_level_name(PredictionLevel level) {
  switch (level) {
    case PredictionLevel::Image: return "image";
    case PredictionLevel::Series: return "series";
    case PredictionLevel::Study: return "study";
  }
  return "?";
}

const char* prediction_status_name(PredictionStatus status) {
  switch (status) {
    case PredictionStatus::Ok: return "ok";
    case PredictionStatus::NoImage: return "no_image";
    case PredictionStatus::Failed: return "failed";
  }
  return "?";
}

int64_t argmax(const std::vector<double>& values) {
  return values.empty() ? -1 : int64_t(std::max_element(values.begin(), values.end()) - values.begin());
}

void softmax_into(const float* logits, int64_t k, double* probabilities) {
  const double top = *std::max_element(logits, logits + k);
  double sum = 0;
  for (int64_t c = 0; c < k; ++c) sum += probabilities[c] = std::exp(double(logits[c]) - top);
  for (int64_t c = 0; c < k; ++c) probabilities[c] /= sum;
}

}  // namespace mm
