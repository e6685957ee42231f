#pragma once
// MedMamba architecture hyper-parameters (the reference class VSSM's arguments).
#include <cstdint>
#include <string>
#include <vector>

namespace mm {

struct ModelConfig {
  std::vector<int64_t> depths{2, 2, 4, 2};
  std::vector<int64_t> dims{96, 192, 384, 768};
  int64_t d_state = 16;
  int64_t num_classes = 1000;
  int64_t in_chans = 3;
  int64_t image_size = 224;
  float drop_path_rate = 0.1f;

  // "tiny"/"t", "small"/"s", "base"/"b"; throws on anything else.
  static ModelConfig variant(const std::string& name, int64_t num_classes = 1000);

  int64_t num_stages() const { return int64_t(depths.size()); }
  int64_t num_blocks() const;
  // dt_rank = ceil(d_model / 16) with d_model = dims[stage] / 2, the SS2D input width.
  int64_t dt_rank(int64_t stage) const { return (dims[stage] / 2 + 15) / 16; }
  // Side length of the stage's feature map for the configured image size.
  int64_t stage_side(int64_t stage) const { return (image_size / 4) >> stage; }

  void validate() const;  // throws mm::Error describing the first inconsistency

  std::string to_json() const;
  static ModelConfig from_json(const std::string& text);
};

// "48,96,192,384" -> {48, 96, 192, 384} (--dims, --depths); "" -> {}. Throws
// mm::Error naming `what` on anything but comma-separated integers.
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what);

}  // namespace mm
