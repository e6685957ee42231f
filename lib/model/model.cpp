#include "model/model.h"

#include <string>

namespace mm {

int64_t check_forward_input(const ModelConfig& cfg, const Tensor& images) {
  MM_CHECK(images.dtype() == DType::F32 && images.ndim() == 4,
           "forward expects a float32 tensor (B,C,H,W), got " + shape_str(images.shape()));
  const int64_t S = images.dim(2);
  MM_CHECK(images.dim(1) == cfg.in_chans, "forward: expected " + std::to_string(cfg.in_chans) +
                                              " input channels, got " + std::to_string(images.dim(1)));
  const int64_t div = 4 << (cfg.num_stages() - 1);
  MM_CHECK(images.dim(3) == S && S % div == 0 && S > 0,
           "forward: input must be square with a side divisible by " + std::to_string(div) + ", got " +
               shape_str(images.shape()));
  return S;
}

void draw_drop_path(float* scale, int64_t B, const ModelConfig& cfg, int64_t block_index, std::mt19937_64& rng) {
  const int64_t nblocks = cfg.num_blocks();
  const float rate = nblocks > 1 ? cfg.drop_path_rate * float(block_index) / float(nblocks - 1) : 0.f;
  std::bernoulli_distribution keep(1.0 - rate);
  for (int64_t b = 0; b < B; ++b) scale[b] = rate > 0.f ? (keep(rng) ? 1.f / (1.f - rate) : 0.f) : 1.f;
}

}  // namespace mm
