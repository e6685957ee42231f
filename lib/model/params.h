#pragma once
// All of a model's float tensors live in one buffer, carved into named views
// whose names are the reference PyTorch state-dict keys. Gradients live in a
// twin buffer with the same layout (llm.c style), so optimizers and
// all-reduces work on one flat array.
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"

namespace mm {

enum class ParamKind : uint8_t {
  Weight,   // trained, weight-decayed
  NoDecay,  // trained, excluded from weight decay (norms, biases, A_logs, Ds)
  Buffer,   // not trained: BatchNorm running statistics
};

struct ParamEntry {
  std::string name;
  Shape shape;
  int64_t offset = 0;  // in floats, into the parameter buffer
  ParamKind kind = ParamKind::Weight;
  int64_t numel() const { return shape_numel(shape); }
};

class ParamTable {
 public:
  // The exact reference layout for a config (state-dict keys, shapes), in module order.
  static ParamTable for_config(const ModelConfig& cfg);

  const std::vector<ParamEntry>& entries() const { return entries_; }
  const ParamEntry* find(const std::string& name) const;  // nullptr when absent
  const ParamEntry& at(const std::string& name) const;    // throws naming the key
  int64_t total_floats() const { return total_; }
  int64_t trainable_count() const;  // what the reference's parameter count reports

  // Throws mm::Error naming every missing, unexpected and mis-shaped tensor of a state
  // dict (num_batches_tracked entries are optional, one value each); `model` describes
  // the model in the message. Reads shapes only, so it runs before any model is built.
  void check_state(const std::map<std::string, Tensor>& state, const std::string& model) const;

  // BatchNorm prefixes ("layers.0.blocks.0.conv33conv33conv11.0"), for num_batches_tracked.
  const std::vector<std::string>& batchnorms() const { return batchnorms_; }

 private:
  void add(const std::string& name, Shape shape, ParamKind kind);
  std::vector<ParamEntry> entries_;
  std::map<std::string, size_t> index_;
  std::vector<std::string> batchnorms_;
  int64_t total_ = 0;
};

}  // namespace mm
