#pragma once
// Helpers shared by the mm-convert tests (test_convert*.cpp).
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "io/torch_checkpoint.h"
#include "io/torch_pickle.h"
#include "io/zip_writer.h"
#include "test_util.h"

namespace mm::test {

inline std::string checkpoint_fixture(const std::string& name) { return fixture_path("checkpoints/" + name); }

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// A zip-format checkpoint "archive/data.pkl" + "archive/data/<key>" records, in memory.
inline std::vector<uint8_t> zip_checkpoint(const std::string& pickle,
                                           const std::map<std::string, std::string>& storages = {},
                                           bool force_zip64 = false) {
  std::ostringstream out;
  ZipWriter zip(out, "test zip", force_zip64);
  zip.add("archive/data.pkl", pickle.data(), pickle.size());
  for (const auto& [key, bytes] : storages) zip.add("archive/data/" + key, bytes.data(), bytes.size());
  zip.finish();
  const std::string s = out.str();
  return {s.begin(), s.end()};
}

inline std::vector<uint8_t> as_bytes(const std::string& s) { return {s.begin(), s.end()}; }

// The pickle torch writes for {name: tensor viewing storage `key`}, with any
// storage size, offset, sizes and strides (hostile ones included).
inline std::string one_tensor_pickle(const std::string& name, const std::string& storage_class, const std::string& key,
                                     int64_t storage_numel, int64_t offset, const std::vector<int64_t>& sizes,
                                     const std::vector<int64_t>& strides) {
  PickleWriter p;
  p.global("collections", "OrderedDict").empty_tuple().reduce().mark();
  p.string(name).global("torch._utils", "_rebuild_tensor_v2").mark();
  p.mark().string("storage").global("torch", storage_class).string(key).string("cpu").integer(storage_numel).tuple();
  p.persistent_id().integer(offset).mark();
  for (int64_t s : sizes) p.integer(s);
  p.tuple().mark();
  for (int64_t s : strides) p.integer(s);
  p.tuple().boolean(false).global("collections", "OrderedDict").empty_tuple().reduce().tuple().reduce();
  p.setitems();
  return p.finish();
}

}  // namespace mm::test
