#pragma once
// Softmax cross-entropy with integer labels, optional class weights and label
// smoothing, reduced as PyTorch's F.cross_entropy(reduction="mean") reduces it:
//   logp = log_softmax(z)
//   loss = (1-eps) * sum_b -w[y_b] logp[b,y_b] / W  +  eps/K * sum_b sum_k -w[k] logp[b,k] / W
// with W = sum_b w[y_b] (B without weights).
#include <cstdint>

namespace mm {

struct CrossEntropyOptions {
  const float* class_weights = nullptr;  // (K), or nullptr for all ones
  float label_smoothing = 0.f;           // eps in [0, 1)
};

// logits: (B,K), labels: (B) in [0,K). Returns the loss; probs (B,K) may be nullptr.
float cross_entropy_forward(float* probs, const float* logits, const int64_t* labels, int64_t B,
                            int64_t K, const CrossEntropyOptions& options = {});

// Accumulates dlogits (B,K) += dloss * dloss/dlogits. Needs the forward's probs.
void cross_entropy_backward(float* dlogits, const float* probs, const int64_t* labels, int64_t B,
                            int64_t K, float dloss = 1.f, const CrossEntropyOptions& options = {});

}  // namespace mm
