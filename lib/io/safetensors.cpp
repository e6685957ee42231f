#include "io/safetensors.h"

#include <cstring>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/file_bytes.h"
#include "io/json_text.h"

namespace mm {

using json = nlohmann::json;

// A header larger than this is refused before reading it: real headers are a
// few hundred KB even for models with thousands of tensors.
static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

const Tensor& SafetensorsFile::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw Error("tensor '" + name + "' not found");
  return it->second;
}

static uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

SafetensorsFile parse_safetensors(const void* bytes, size_t size, const std::string& what) {
  auto fail = [&](const std::string& why) -> Error { return Error(what + ": " + why); };
  const auto* p = static_cast<const unsigned char*>(bytes);
  if (size < 8) throw fail("file too short for a safetensors header (" + std::to_string(size) + " bytes)");
  const uint64_t header_len = read_u64_le(p);
  if (header_len > kMaxHeaderBytes || header_len > size - 8)
    throw fail("header length " + std::to_string(header_len) + " exceeds the file size " +
               std::to_string(size) + " (truncated or not a safetensors file)");
  const unsigned char* data = p + 8 + header_len;
  const uint64_t data_len = size - 8 - header_len;

  json header;
  try {
    header = json::parse(p + 8, p + 8 + header_len);
  } catch (const json::exception& e) {
    throw fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw fail("header is not a JSON object");

  SafetensorsFile out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw fail("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw fail("__metadata__ value '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) { return fail("tensor '" + name + "': " + why); };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw bad("entry needs dtype, shape and data_offsets");
    if (!v["dtype"].is_string()) throw bad("dtype is not a string");
    DType dt;
    try {
      dt = dtype_from_name(v["dtype"].get<std::string>());
    } catch (const Error& e) {
      throw bad(e.what());
    }
    const json& js = v["shape"];
    if (!js.is_array() || js.size() > 16) throw bad("shape must be an array of at most 16 dims");
    Shape shape;
    // A zero dim makes numel 0 but not the products of the dims before it, which
    // Shape arithmetic (int64_t) computes too: the non-zero dims must fit int64_t.
    uint64_t numel = 1, nonzero = 1;
    for (const json& d : js) {
      if (!d.is_number_unsigned()) throw bad("shape entries must be non-negative integers");
      const uint64_t n = d.get<uint64_t>();
      if (n != 0 && nonzero > uint64_t(std::numeric_limits<int64_t>::max()) / n) throw bad("shape overflows");
      nonzero *= n ? n : 1;
      numel *= n;
      shape.push_back(int64_t(n));
    }
    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw bad("data_offsets must be two non-negative integers");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_len)
      throw bad("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                "] outside the data section of " + std::to_string(data_len) + " bytes");
    if (numel > (end - begin) / dtype_size(dt) || numel * dtype_size(dt) != end - begin)
      throw bad("shape " + shape_str(shape) + " of " + dtype_name(dt) + " needs " +
                std::to_string(numel * dtype_size(dt)) + " bytes but data_offsets span " +
                std::to_string(end - begin));
    Tensor t = Tensor::empty(shape, dt);
    if (t.nbytes()) std::memcpy(t.data(), data + begin, t.nbytes());
    out.tensors.emplace(name, std::move(t));
  }
  return out;
}

SafetensorsFile read_safetensors(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return parse_safetensors(bytes.data(), bytes.size(), path);
}

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<Tensor> host;  // std::map iteration order == safetensors' sorted order
  for (const auto& [name, t] : tensors) {
    MM_CHECK(name != "__metadata__", path + ": tensor name '__metadata__' is reserved");
    host.push_back(t.to(Device::CPU));
    header[name] = {{"dtype", dtype_name(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string hs = json_text(header);
  hs.append((8 - hs.size() % 8) % 8, ' ');  // pad so the data section starts 8-byte aligned
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error(path + ": cannot open for writing");
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = (uint64_t(hs.size()) >> (8 * i)) & 0xff;
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(hs.data(), std::streamsize(hs.size()));
  for (const Tensor& t : host) f.write(static_cast<const char*>(t.data()), std::streamsize(t.nbytes()));
  if (!f) throw Error(path + ": write failed");
}

}  // namespace mm
