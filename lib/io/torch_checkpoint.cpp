// Reading torch.save output: format detection, the zip and legacy layouts, and
// finding the state dict. Tensors are rebuilt in torch_rebuild.cpp.
#include "io/torch_checkpoint.h"

#include <cstring>
#include <fstream>
#include <functional>

#include "core/error.h"
#include "io/file_bytes.h"
#include "io/torch_pickle.h"
#include "io/torch_rebuild.h"
#include "io/torch_storage.h"
#include "io/zip_reader.h"

namespace mm {

namespace {

constexpr uint64_t kMaxPickleBytes = uint64_t(1) << 30;
// torch.serialization.MAGIC_NUMBER (0x1950a86a20f9469cfc6c) as pickle's LONG1 payload.
constexpr uint8_t kLegacyMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
constexpr int64_t kLegacyProtocolVersion = 1001;
// Keys under which training scripts nest the state dict, most specific first.
const char* const kWrapperKeys[] = {"state_dict", "model_state_dict", "model", "net", "network", "module", "weights"};
// Prefixes left by wrappers that change every key: DataParallel/DDP and torch.compile.
const char* const kWrapperPrefixes[] = {"module.", "_orig_mod."};
constexpr int kMaxWrapperDepth = 4;

UnpickleOptions checkpoint_unpickle_options() {
  UnpickleOptions o;
  o.allowed_globals = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
                       "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"};
  for (const TorchStorageType& t : torch_storage_types()) o.allowed_globals.insert(t.global);
  o.dict_classes = {"collections.OrderedDict"};
  return o;
}

bool is_state_dict(const PickleValue* v) {
  if (!v->is(PickleKind::Dict) || v->dict_size() == 0) return false;
  for (size_t i = 0; i < v->dict_size(); ++i)
    if (!v->dict_key(i)->is(PickleKind::String) || !is_torch_tensor(v->dict_value(i))) return false;
  return true;
}

// Finds the state dict in the object torch.save was given; key_path gets the wrapper path.
const PickleValue* find_state_dict(const PickleValue* v, std::string& key_path, int depth) {
  if (is_state_dict(v)) return v;
  if (!v->is(PickleKind::Dict) || depth >= kMaxWrapperDepth) return nullptr;
  auto descend = [&](const std::string& key, const PickleValue* child) -> const PickleValue* {
    std::string sub;
    const PickleValue* found = find_state_dict(child, sub, depth + 1);
    if (found) key_path = key + (sub.empty() ? "" : "." + sub);
    return found;
  };
  // Only the first wrapper key holding a dict is followed: trying every one
  // would let a hostile file (all keys aliasing one dict) cost 7^depth scans.
  for (const char* key : kWrapperKeys) {
    const PickleValue* child = v->get(key);
    if (child && child->is(PickleKind::Dict)) {
      if (const PickleValue* found = descend(key, child)) return found;
      break;
    }
  }
  // Any other single entry that is a state dict ({"ema": ..., "epoch": 3}).
  const PickleValue* only = nullptr;
  std::string only_key;
  for (size_t i = 0; i < v->dict_size(); ++i) {
    if (!v->dict_key(i)->is(PickleKind::String) || !is_state_dict(v->dict_value(i))) continue;
    if (only) return nullptr;  // ambiguous
    only = v->dict_value(i);
    only_key = v->dict_key(i)->text;
  }
  if (only) key_path = only_key;
  return only;
}

std::string list_entries(const PickleValue* dict) {
  std::string out;
  for (size_t i = 0; i < dict->dict_size() && i < 20; ++i)
    out += (i ? ", " : "") + (dict->dict_key(i)->is(PickleKind::String) ? dict->dict_key(i)->text : dict->dict_key(i)->describe()) +
           " (" + dict->dict_value(i)->describe() + ")";
  if (dict->dict_size() > 20) out += ", ...";
  return out;
}

// Turns the unpickled object into the checkpoint's state dict.
TorchCheckpoint extract_state_dict(const PickleValue* root, const StorageSource& storages, const std::string& what) {
  TorchCheckpoint ck;
  const PickleValue* sd = find_state_dict(root, ck.state_dict_key, 0);
  if (!sd) {
    if (root->is(PickleKind::Dict))
      throw Error(what + ": no state dict (a dict of tensors) found; top-level entries: " + list_entries(root));
    throw Error(what + ": the checkpoint holds " + root->describe() + ", not a state dict");
  }
  if (!ck.state_dict_key.empty() && root->is(PickleKind::Dict)) {
    const std::string top = ck.state_dict_key.substr(0, ck.state_dict_key.find('.'));
    for (size_t i = 0; i < root->dict_size(); ++i) {
      const PickleValue* k = root->dict_key(i);
      if (k->is(PickleKind::String) && k->text == top) continue;
      ck.ignored.push_back((k->is(PickleKind::String) ? k->text : k->describe()) + " (" + root->dict_value(i)->describe() + ")");
    }
  }
  TensorRebuilder rebuild(storages, what);
  std::map<std::string, size_t> index;  // a repeated key keeps its first position and its last value
  for (size_t i = 0; i < sd->dict_size(); ++i) {
    const std::string& name = sd->dict_key(i)->text;
    Tensor t = rebuild(sd->dict_value(i), name);
    auto [it, fresh] = index.emplace(name, ck.tensors.size());
    if (fresh) ck.tensors.emplace_back(name, std::move(t));
    else ck.tensors[it->second].second = std::move(t);
  }
  ck.stripped_prefix = strip_wrapper_prefixes(ck.tensors);
  return ck;
}

// ---------------------------------------------------------------------------
// The zip layout (PyTorch >= 1.6)

TorchCheckpoint parse_zip(std::vector<uint8_t> bytes, const std::string& what) {
  const ZipReader zip = ZipReader::from_bytes(std::move(bytes), what);
  std::string prefix;
  int candidates = 0;
  for (const ZipEntry& e : zip.entries()) {
    const size_t slash = e.name.find('/');
    if (slash == std::string::npos || slash == 0) continue;
    const std::string rest = e.name.substr(slash + 1);
    if (rest == "constants.pkl" || rest.compare(0, 5, "code/") == 0)
      throw Error(what + ": this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; "
                         "load it in Python with torch.jit.load and save model.state_dict() with torch.save");
    if (rest == "data.pkl") {
      prefix = e.name.substr(0, slash + 1);
      ++candidates;
    }
  }
  if (candidates == 0) {
    std::string names;
    for (size_t i = 0; i < zip.entries().size() && i < 8; ++i) names += (i ? ", " : "") + zip.entries()[i].name;
    throw Error(what + ": a zip archive without <prefix>/data.pkl, so not a torch.save checkpoint (entries: " +
                names + ")");
  }
  if (candidates > 1) throw Error(what + ": the zip archive holds several data.pkl records");

  bool big_endian = false;
  if (const ZipEntry* order = zip.find(prefix + "byteorder")) {
    const std::vector<uint8_t> b = zip.read(*order, 16);
    const std::string s(b.begin(), b.end());
    if (s == "big") big_endian = true;
    else if (s != "little") throw Error(what + ": byteorder record says '" + s + "'");
  }
  const std::vector<uint8_t> pkl = zip.read(prefix + "data.pkl", kMaxPickleBytes);
  PickleDocument doc;
  size_t pos = 0;
  const PickleValue* root = unpickle(doc, pkl.data(), pkl.size(), pos, checkpoint_unpickle_options(), what + " (data.pkl)");

  std::map<std::string, const ZipEntry*> records;  // storage key -> its record
  for (const ZipEntry& e : zip.entries())
    if (e.name.compare(0, prefix.size() + 5, prefix + "data/") == 0) records.emplace(e.name.substr(prefix.size() + 5), &e);
  std::map<std::string, std::vector<uint8_t>> loaded;  // tensors sharing a storage read it once
  StorageSource storages;
  storages.big_endian = big_endian;
  storages.total_budget = 8 * zip.archive_size() + (uint64_t(1) << 20);
  storages.load = [&](const std::string& key) -> StorageBytes {
    auto it = loaded.find(key);
    if (it == loaded.end()) {
      auto record = records.find(key);
      if (record == records.end()) throw Error(what + ": storage '" + key + "' has no record " + prefix + "data/" + key);
      it = loaded.emplace(key, zip.read(*record->second)).first;
    }
    return {it->second.data(), it->second.size()};
  };
  TorchCheckpoint ck = extract_state_dict(root, storages, what);
  ck.format = "zip";
  return ck;
}

// ---------------------------------------------------------------------------
// The legacy stream (before PyTorch 1.6, or _use_new_zipfile_serialization=False)

TorchCheckpoint parse_legacy(const std::vector<uint8_t>& bytes, const std::string& what) {
  const UnpickleOptions options = checkpoint_unpickle_options();
  PickleDocument doc;
  size_t pos = 0;
  auto next = [&](const char* part) { return unpickle(doc, bytes.data(), bytes.size(), pos, options, what + " (" + part + ")"); };
  const PickleValue* magic = next("magic number");
  if (!magic->is(PickleKind::BigInt) || magic->text.size() != sizeof kLegacyMagic ||
      std::memcmp(magic->text.data(), kLegacyMagic, sizeof kLegacyMagic) != 0)
    throw Error(what + ": a pickle, but not a torch.save checkpoint (no torch magic number)");
  const PickleValue* version = next("protocol version");
  if (!version->is(PickleKind::Int) || version->integer != kLegacyProtocolVersion)
    throw Error(what + ": legacy checkpoint protocol " + version->describe() + " is not supported (expected 1001)");
  const PickleValue* sys_info = next("sys_info");
  const PickleValue* little = sys_info->get("little_endian");
  const PickleValue* root = next("object");
  const PickleValue* keys = next("storage keys");
  if (!keys->is(PickleKind::List)) throw Error(what + ": the storage key list is " + keys->describe());

  // The raw storages follow in key order, each an int64 element count then the
  // bytes; the element size comes from the persistent ids that name the key.
  std::map<std::string, size_t> element_size;
  for (const PickleValue& v : doc.values()) {
    std::string key;
    const TorchStorageType* type = nullptr;
    if (v.is(PickleKind::PersistentId) && storage_pid_key_and_type(&v, key, type))
      element_size.emplace(key, type->element_size);
  }
  std::map<std::string, StorageBytes> raw;
  for (const PickleValue* k : keys->items) {
    if (!k->is(PickleKind::String)) throw Error(what + ": storage key " + k->describe() + " is not a string");
    auto es = element_size.find(k->text);
    if (es == element_size.end()) throw Error(what + ": storage '" + k->text + "' is listed but no tensor names its type");
    if (bytes.size() - pos < 8) throw Error(what + ": storage '" + k->text + "' is missing (truncated file)");
    uint64_t count = 0;
    for (int i = 7; i >= 0; --i) count = (count << 8) | bytes[pos + size_t(i)];
    pos += 8;
    if (count > (bytes.size() - pos) / es->second)
      throw Error(what + ": storage '" + k->text + "' claims " + std::to_string(count) + " elements of " +
                  std::to_string(es->second) + " bytes; only " + std::to_string(bytes.size() - pos) + " bytes remain");
    raw[k->text] = {bytes.data() + pos, count * es->second};
    pos += size_t(count * es->second);
  }
  StorageSource storages;
  storages.big_endian = little && little->is(PickleKind::Bool) && !little->boolean;
  storages.total_budget = 8 * uint64_t(bytes.size()) + (uint64_t(1) << 20);
  storages.load = [&](const std::string& key) -> StorageBytes {
    auto it = raw.find(key);
    if (it == raw.end()) throw Error(what + ": storage '" + key + "' is not in the file");
    return it->second;
  };
  TorchCheckpoint ck = extract_state_dict(root, storages, what);
  ck.format = "legacy";
  return ck;
}

}  // namespace

std::string strip_wrapper_prefixes(NamedTensors& tensors) {
  std::string stripped;
  for (bool again = !tensors.empty(); again;) {
    again = false;
    for (const char* prefix : kWrapperPrefixes) {
      const std::string p = prefix;
      bool all = true;
      for (const auto& [name, t] : tensors) all = all && name.size() > p.size() && name.compare(0, p.size(), p) == 0;
      if (!all) continue;
      for (auto& [name, t] : tensors) name.erase(0, p.size());
      stripped += p;
      again = true;
    }
  }
  return stripped;
}

std::map<std::string, Tensor> TorchCheckpoint::state() const { return {tensors.begin(), tensors.end()}; }

TorchCheckpoint parse_torch_checkpoint(std::vector<uint8_t> bytes, const std::string& what) {
  if (looks_like_zip(bytes.data(), bytes.size())) return parse_zip(std::move(bytes), what);
  if (bytes.size() >= 2 && bytes[0] == 0x80 && bytes[1] >= 2) return parse_legacy(bytes, what);
  if (bytes.size() >= 262 && std::memcmp(bytes.data() + 257, "ustar", 5) == 0)
    throw Error(what + ": a tar-format checkpoint (PyTorch before 0.4) is not supported; "
                       "re-save it with a current PyTorch");
  throw Error(what + ": not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle stream)");
}

TorchCheckpoint read_torch_checkpoint(const std::string& path) {
  return parse_torch_checkpoint(read_file_bytes(path), path);
}

}  // namespace mm
