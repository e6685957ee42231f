#pragma once
// Rebuilding tensors from the calls torch pickles for them:
//   torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
//   torch._utils._rebuild_tensor(storage, offset, size, stride)            (PyTorch < 0.4)
//   torch._utils._rebuild_parameter(tensor, requires_grad, hooks)          (nn.Parameter)
//   torch._utils._rebuild_parameter_with_state(tensor, requires_grad, hooks, state)
// where storage is the persistent id ('storage', storage class, key, location,
// numel[, (view_key, view_offset, view_numel)]) and the view is materialised
// as a contiguous tensor. Nothing here trusts the pickle: every index is
// checked against the storage's bytes before it is read.
#include <cstdint>
#include <functional>
#include <string>

#include "core/tensor.h"
#include "io/torch_pickle.h"
#include "io/torch_storage.h"

namespace mm {

struct StorageBytes {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

struct StorageSource {
  std::function<StorageBytes(const std::string& key)> load;  // throws when the key has no storage
  bool big_endian = false;      // the file's byte order (swapped to ours on read)
  uint64_t total_budget = 0;    // bytes all rebuilt tensors may take together (shared storages amplify)
};

bool is_torch_tensor(const PickleValue* v);

// The key and storage class of a persistent id, when it is a well-formed storage id.
bool storage_pid_key_and_type(const PickleValue* pid, std::string& key, const TorchStorageType*& type);

class TensorRebuilder {
 public:
  TensorRebuilder(const StorageSource& storages, const std::string& what) : storages_(storages), what_(what) {}
  // name: the state-dict key, for messages.
  Tensor operator()(const PickleValue* v, const std::string& name);

 private:
  const StorageSource& storages_;
  const std::string& what_;
  uint64_t used_ = 0;
};

}  // namespace mm
