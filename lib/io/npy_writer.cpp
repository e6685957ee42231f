#include "io/npy_writer.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace mm {

std::vector<uint8_t> encode_npy_f32(const float* data, const std::vector<int64_t>& shape) {
  std::string dims;  // "3, 4"; a 1-D shape keeps Python's tuple comma: "3,"
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    MM_CHECK(shape[i] >= 0, "npy: negative dimension");
    dims += (i ? ", " : "") + std::to_string(shape[i]);
    n *= shape[i];
  }
  if (shape.size() == 1) dims += ",";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic (6) + version (2) + header length (2) + header, padded with spaces to a
  // multiple of 64 bytes and ended by a newline, as NumPy writes it.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  const std::string preamble = std::string("\x93NUMPY\x01\x00", 8) + char(header.size() & 0xff) +
                               char(header.size() >> 8) + header;
  static_assert(sizeof(float) == 4, "float32");
  const size_t bytes = size_t(n) * sizeof(float);
  std::vector<uint8_t> out(preamble.size() + bytes);
  std::memcpy(out.data(), preamble.data(), preamble.size());
  std::memcpy(out.data() + preamble.size(), data, bytes);  // x86-64 and arm64 are little-endian
  return out;
}

void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  const std::vector<uint8_t> bytes = encode_npy_f32(data, shape);
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  MM_CHECK(f.good(), path + ": cannot write the .npy file");
}

}  // namespace mm
