#include "convert/infer_config.h"

#include <algorithm>
#include <cstdlib>

#include "core/error.h"

namespace mm {

namespace {

constexpr const char* kPatchEmbed = "patch_embed.proj.weight";
constexpr int64_t kMaxStages = 8;  // 4 << (stages-1) must stay a sane image-side divisor

const Tensor& need(const std::map<std::string, Tensor>& state, const std::string& key, int ndim) {
  auto it = state.find(key);
  if (it == state.end()) {
    std::string some;
    int n = 0;
    for (auto k = state.begin(); k != state.end() && n < 5; ++k, ++n) some += (n ? ", " : "") + k->first;
    throw Error("cannot infer the MedMamba architecture: no tensor '" + key + "' (the keys begin: " + some + ")");
  }
  if (it->second.ndim() != ndim)
    throw Error("cannot infer the MedMamba architecture: '" + key + "' has shape " + shape_str(it->second.shape()) +
                ", expected " + std::to_string(ndim) + " dimensions");
  return it->second;
}

// "layers.3.blocks.12.ln_1.weight" -> stage 3, block 12; false for other keys.
bool parse_block_key(const std::string& key, int64_t& stage, int64_t& block) {
  const char* p = key.c_str();
  if (key.compare(0, 7, "layers.") != 0) return false;
  char* end = nullptr;
  stage = std::strtoll(p + 7, &end, 10);
  if (end == p + 7 || std::string(end).compare(0, 8, ".blocks.") != 0) return false;
  const char* b = end + 8;
  block = std::strtoll(b, &end, 10);
  return end != b && *end == '.' && stage >= 0 && block >= 0;
}

}  // namespace

ModelConfig infer_model_config(const std::map<std::string, Tensor>& state, int64_t image_size) {
  ModelConfig cfg;
  const Tensor& embed = need(state, kPatchEmbed, 4);
  if (embed.dim(2) != 4 || embed.dim(3) != 4)
    throw Error(std::string(kPatchEmbed) + " has shape " + shape_str(embed.shape()) +
                ": a patch size other than 4 is not supported");
  cfg.in_chans = embed.dim(1);
  const int64_t dim0 = embed.dim(0);
  // Bounds far beyond any real model keep the shape arithmetic below from overflowing.
  if (dim0 < 2 || dim0 > (int64_t(1) << 16) || cfg.in_chans < 1 || cfg.in_chans > 1024)
    throw Error(std::string(kPatchEmbed) + " has an implausible shape " + shape_str(embed.shape()));

  // A block index beyond the number of tensors cannot be real: bound it so a
  // hostile key cannot make us build an enormous model.
  const int64_t max_blocks = int64_t(state.size());
  std::vector<int64_t> depths;
  for (const auto& [key, t] : state) {
    int64_t stage, block;
    if (!parse_block_key(key, stage, block)) continue;
    if (stage >= kMaxStages || block >= max_blocks)
      throw Error("cannot infer the MedMamba architecture: key '" + key + "' names an implausible stage or block");
    if (int64_t(depths.size()) <= stage) depths.resize(size_t(stage) + 1, 0);
    depths[size_t(stage)] = std::max(depths[size_t(stage)], block + 1);
  }
  if (depths.empty()) throw Error("cannot infer the MedMamba architecture: no layers.{i}.blocks.{j} tensors");
  // A block has 26 tensors (31 with the BatchNorm counters): keys naming far
  // more blocks than the tensors could fill describe no model worth building.
  int64_t blocks = 0;
  for (int64_t d : depths) blocks += d;
  if (blocks * 8 > max_blocks)
    throw Error("cannot infer the MedMamba architecture: the keys name " + std::to_string(blocks) +
                " blocks but there are only " + std::to_string(max_blocks) + " tensors");
  cfg.depths = depths;
  cfg.dims.clear();
  for (size_t i = 0; i < depths.size(); ++i) cfg.dims.push_back(dim0 << i);
  cfg.num_classes = need(state, "head.weight", 2).dim(0);
  if (cfg.num_classes > (int64_t(1) << 24))
    throw Error("head.weight has an implausible shape " + shape_str(state.at("head.weight").shape()));
  cfg.d_state = need(state, "layers.0.blocks.0.self_attention.A_logs", 2).dim(1);
  cfg.image_size = image_size;
  cfg.validate();

  for (int64_t i = 0; i < cfg.num_stages(); ++i) {
    const std::string key = "layers." + std::to_string(i) + ".blocks.0.self_attention.dt_projs_weight";
    auto it = state.find(key);
    if (it == state.end() || it->second.ndim() != 3 || it->second.dim(1) != cfg.dims[size_t(i)]) continue;
    if (it->second.dim(2) != cfg.dt_rank(i))
      throw Error(key + " has dt_rank " + std::to_string(it->second.dim(2)) + " (shape " + shape_str(it->second.shape()) +
                  "), but MedMamba's is ceil(" + std::to_string(cfg.dims[size_t(i)]) + "/2/16) = " +
                  std::to_string(cfg.dt_rank(i)) + "; models with another dt_rank are not supported");
  }
  return cfg;
}

std::string strip_model_prefix(std::map<std::string, Tensor>& state) {
  if (state.count(kPatchEmbed)) return "";
  std::string prefix;
  for (const auto& [key, t] : state) {
    const std::string tail = std::string(".") + kPatchEmbed;
    if (key.size() > tail.size() && key.compare(key.size() - tail.size(), tail.size(), tail) == 0) {
      if (!prefix.empty()) return "";  // two candidate models: leave it to the caller's error
      prefix = key.substr(0, key.size() - std::string(kPatchEmbed).size());
    }
  }
  if (prefix.empty()) return "";
  for (const auto& [key, t] : state)
    if (key.compare(0, prefix.size(), prefix) != 0) return "";
  std::map<std::string, Tensor> stripped;
  for (auto& [key, t] : state) stripped.emplace(key.substr(prefix.size()), t);
  state = std::move(stripped);
  return prefix;
}

}  // namespace mm
