#include "model/params.h"

#include <set>
#include <sstream>

#include "core/error.h"

namespace mm {

void ParamTable::add(const std::string& name, Shape shape, ParamKind kind) {
  index_[name] = entries_.size();
  // Keep every tensor 64-byte aligned inside the buffer (16 floats).
  ParamEntry e{name, std::move(shape), total_, kind};
  total_ += (e.numel() + 15) / 16 * 16;
  entries_.push_back(std::move(e));
}

const ParamEntry* ParamTable::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const ParamEntry& ParamTable::at(const std::string& name) const {
  const ParamEntry* e = find(name);
  if (!e) throw Error("model has no parameter '" + name + "'");
  return *e;
}

int64_t ParamTable::trainable_count() const {
  int64_t n = 0;
  for (const auto& e : entries_)
    if (e.kind != ParamKind::Buffer) n += e.numel();
  return n;
}

void ParamTable::check_state(const std::map<std::string, Tensor>& state, const std::string& model) const {
  std::vector<std::string> missing, unexpected, misshaped;
  for (const ParamEntry& e : entries_) {
    auto it = state.find(e.name);
    if (it == state.end()) {
      missing.push_back(e.name);
    } else if (it->second.shape() != e.shape) {
      misshaped.push_back(e.name + " (file " + shape_str(it->second.shape()) + ", model " + shape_str(e.shape) + ")");
    }
  }
  std::set<std::string> counters;
  for (const std::string& bn : batchnorms_) counters.insert(bn + ".num_batches_tracked");
  for (const auto& [name, t] : state) {
    if (find(name)) continue;
    if (!counters.count(name)) unexpected.push_back(name);
    else if (t.numel() != 1) misshaped.push_back(name + " (file " + shape_str(t.shape()) + ", model [])");
  }
  if (missing.empty() && unexpected.empty() && misshaped.empty()) return;
  std::ostringstream msg;
  msg << "weights do not match the model (" << model << ")";
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    msg << "\n  " << what << " (" << v.size() << "):";
    for (const auto& s : v) msg << "\n    " << s;
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("wrong shape", misshaped);
  throw Error(msg.str());
}

ParamTable ParamTable::for_config(const ModelConfig& cfg) {
  cfg.validate();
  ParamTable t;
  const auto W = ParamKind::Weight, ND = ParamKind::NoDecay, BUF = ParamKind::Buffer;
  const int64_t N = cfg.d_state;
  auto batchnorm = [&](const std::string& p, int64_t c) {
    t.add(p + ".weight", {c}, ND);
    t.add(p + ".bias", {c}, ND);
    t.add(p + ".running_mean", {c}, BUF);
    t.add(p + ".running_var", {c}, BUF);
    t.batchnorms_.push_back(p);
  };
  t.add("patch_embed.proj.weight", {cfg.dims[0], cfg.in_chans, 4, 4}, W);
  t.add("patch_embed.proj.bias", {cfg.dims[0]}, ND);
  t.add("patch_embed.norm.weight", {cfg.dims[0]}, ND);
  t.add("patch_embed.norm.bias", {cfg.dims[0]}, ND);
  for (int64_t i = 0; i < cfg.num_stages(); ++i) {
    const int64_t C = cfg.dims[i], c = C / 2, R = cfg.dt_rank(i);
    for (int64_t j = 0; j < cfg.depths[i]; ++j) {
      const std::string b = "layers." + std::to_string(i) + ".blocks." + std::to_string(j) + ".";
      const std::string sa = b + "self_attention.";
      t.add(b + "ln_1.weight", {c}, ND);
      t.add(b + "ln_1.bias", {c}, ND);
      t.add(sa + "x_proj_weight", {4, R + 2 * N, C}, W);
      t.add(sa + "dt_projs_weight", {4, C, R}, W);
      t.add(sa + "dt_projs_bias", {4, C}, ND);
      t.add(sa + "A_logs", {4 * C, N}, ND);
      t.add(sa + "Ds", {4 * C}, ND);
      t.add(sa + "in_proj.weight", {2 * C, c}, W);
      t.add(sa + "conv2d.weight", {C, 1, 3, 3}, W);
      t.add(sa + "conv2d.bias", {C}, ND);
      t.add(sa + "out_norm.weight", {C}, ND);
      t.add(sa + "out_norm.bias", {C}, ND);
      t.add(sa + "out_proj.weight", {c, C}, W);
      const std::string cb = b + "conv33conv33conv11.";
      batchnorm(cb + "0", c);
      t.add(cb + "1.weight", {c, c, 3, 3}, W);
      t.add(cb + "1.bias", {c}, ND);
      batchnorm(cb + "2", c);
      t.add(cb + "4.weight", {c, c, 3, 3}, W);
      t.add(cb + "4.bias", {c}, ND);
      batchnorm(cb + "5", c);
      t.add(cb + "7.weight", {c, c, 1, 1}, W);
      t.add(cb + "7.bias", {c}, ND);
    }
    if (i + 1 < cfg.num_stages()) {
      const std::string d = "layers." + std::to_string(i) + ".downsample.";
      t.add(d + "norm.weight", {4 * C}, ND);
      t.add(d + "norm.bias", {4 * C}, ND);
      t.add(d + "reduction.weight", {2 * C, 4 * C}, W);
    }
  }
  t.add("head.weight", {cfg.num_classes, cfg.dims.back()}, W);
  t.add("head.bias", {cfg.num_classes}, ND);
  return t;
}

}  // namespace mm
