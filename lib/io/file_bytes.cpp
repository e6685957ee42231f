#include "io/file_bytes.h"

#include <fstream>

#include "core/error.h"

namespace mm {

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error(path + ": cannot open file");
  const std::streamoff size = f.tellg();
  if (size < 0) throw Error(path + ": cannot determine file size");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  f.seekg(0);
  if (size && !f.read(reinterpret_cast<char*>(bytes.data()), size)) throw Error(path + ": read failed");
  return bytes;
}

}  // namespace mm
