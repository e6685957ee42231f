#pragma once
// PyTorch checkpoints (what torch.save writes), read without Python and
// written so that torch.load(..., weights_only=True) reads them back.
//
// Read:
//   - the zip archive of PyTorch >= 1.6: <prefix>/data.pkl, <prefix>/data/<key>,
//     optional <prefix>/byteorder, for any prefix;
//   - the legacy stream (older PyTorch, or _use_new_zipfile_serialization=False):
//     pickles of the magic number, protocol version and sys_info, then the
//     object, then the list of storage keys, then each storage's raw bytes.
// The object pickle is unpickled by the safe VM in torch_pickle.h with an
// allow-list of globals (OrderedDict, the tensor rebuild functions, storage
// types). The state dict is found at the top level or under a wrapper key
// ("state_dict", "model_state_dict", "model", ...); other entries (epoch,
// optimizer) are ignored; a prefix every key shares ("module." from
// DataParallel/DDP, "_orig_mod." from torch.compile) is stripped. Tensors are
// materialised contiguous from their storage view (offset, sizes, strides);
// float32/float16/bfloat16/float64/int64/int32/uint8 storages keep their dtype.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace mm {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;  // in file order

struct TorchCheckpoint {
  NamedTensors tensors;                 // the state dict, prefix stripped, CPU, contiguous
  std::string format;                   // "zip" or "legacy"
  std::string state_dict_key;           // wrapper path ("model", "checkpoint.state_dict"); empty: top level
  std::string stripped_prefix;          // e.g. "module."; empty when none
  std::vector<std::string> ignored;     // other entries beside the state dict, described
  std::map<std::string, Tensor> state() const;  // keyed by name
};

// Strips, repeatedly, a prefix that every key shares and that wrappers add
// ("module." from DataParallel/DDP, "_orig_mod." from torch.compile).
// Returns what was stripped ("" for nothing).
std::string strip_wrapper_prefixes(NamedTensors& tensors);

// Throws mm::Error naming the file and the reason for anything it cannot or
// will not read (truncated, corrupt, hostile, TorchScript, not a state dict).
TorchCheckpoint read_torch_checkpoint(const std::string& path);
TorchCheckpoint parse_torch_checkpoint(std::vector<uint8_t> bytes, const std::string& what);

// Writes a zip-format checkpoint holding an OrderedDict of tensors (each with
// its own storage), as torch.save(state_dict) would.
struct TorchWriteOptions {
  std::string archive_name = "archive";  // the <prefix> directory inside the zip
  bool force_zip64 = false;              // ZIP64 records even when sizes fit in 32 bits
};
void write_torch_checkpoint(const std::string& path, const NamedTensors& tensors, const TorchWriteOptions& options = {});
void write_torch_checkpoint(const std::string& path, const std::map<std::string, Tensor>& tensors);

}  // namespace mm
