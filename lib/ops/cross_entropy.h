#pragma once
// Softmax cross-entropy with integer labels, mean over the batch (PyTorch's default).
#include <cstdint>

namespace mm {

// logits: (B,K), labels: (B) in [0,K). Returns the mean loss; probs (B,K) may be nullptr.
float cross_entropy_forward(float* probs, const float* logits, const int64_t* labels, int64_t B,
                            int64_t K);

// Accumulates dlogits (B,K) += dloss * (softmax - onehot) / B. Needs the forward's probs.
void cross_entropy_backward(float* dlogits, const float* probs, const int64_t* labels, int64_t B,
                            int64_t K, float dloss = 1.f);

}  // namespace mm
