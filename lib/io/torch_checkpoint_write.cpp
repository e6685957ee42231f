// Writing a state dict as torch.save does (zip format), readable by
// torch.load(..., weights_only=True).
#include <fstream>

#include "core/error.h"
#include "io/torch_checkpoint.h"
#include "io/torch_pickle.h"
#include "io/torch_storage.h"
#include "io/zip_writer.h"

namespace mm {

namespace {

// pickle's own batching: SETITEMS takes at most this many pairs per MARK.
constexpr size_t kSetItemsBatch = 1000;

void write_empty_ordered_dict(PickleWriter& p) { p.global("collections", "OrderedDict").empty_tuple().reduce(); }

// OrderedDict{name: _rebuild_tensor_v2(persistent storage id, 0, size, stride, False, OrderedDict())}
std::string state_dict_pickle(const NamedTensors& tensors) {
  PickleWriter p;
  write_empty_ordered_dict(p);
  p.mark();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    const TorchStorageType& storage = torch_storage_for(t.dtype());
    const std::string global = storage.global;  // "torch.FloatStorage"
    p.string(name).global("torch._utils", "_rebuild_tensor_v2").mark();
    p.mark().string("storage").global("torch", global.substr(global.find('.') + 1)).string(std::to_string(i));
    p.string("cpu").integer(t.numel()).tuple().persistent_id();
    p.integer(0).mark();
    for (int64_t d : t.shape()) p.integer(d);
    p.tuple().mark();
    int64_t stride = 1;
    std::vector<int64_t> strides(t.shape().size());
    for (size_t d = strides.size(); d-- > 0;) {
      strides[d] = stride;
      stride *= t.shape()[d];
    }
    for (int64_t s : strides) p.integer(s);
    p.tuple().boolean(false);
    write_empty_ordered_dict(p);
    p.tuple().reduce();
    if ((i + 1) % kSetItemsBatch == 0 && i + 1 < tensors.size()) p.setitems().mark();
  }
  p.setitems();
  return p.finish();
}

}  // namespace

void write_torch_checkpoint(const std::string& path, const NamedTensors& tensors, const TorchWriteOptions& options) {
  MM_CHECK(!options.archive_name.empty() && options.archive_name.find('/') == std::string::npos,
           path + ": the archive name must be one path component");
  std::vector<Tensor> host;
  for (const auto& [name, t] : tensors) {
    host.push_back(t.to(Device::CPU));
    try {
      torch_storage_for(t.dtype());
    } catch (const Error& e) {
      throw Error(path + ": tensor '" + name + "': " + e.what());
    }
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error(path + ": cannot open for writing");
  ZipWriter zip(f, path, options.force_zip64);
  const std::string prefix = options.archive_name + "/";
  const std::string pkl = state_dict_pickle(tensors);
  zip.add(prefix + "data.pkl", pkl.data(), pkl.size());
  zip.add(prefix + "byteorder", "little", 6);
  for (size_t i = 0; i < host.size(); ++i)
    zip.add(prefix + "data/" + std::to_string(i), host[i].data(), host[i].nbytes());
  zip.add(prefix + "version", "3\n", 2);
  zip.finish();
}

void write_torch_checkpoint(const std::string& path, const std::map<std::string, Tensor>& tensors) {
  write_torch_checkpoint(path, NamedTensors(tensors.begin(), tensors.end()));
}

}  // namespace mm
