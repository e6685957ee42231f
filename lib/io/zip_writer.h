#pragma once
// Writes ZIP archives of stored (uncompressed) entries, as torch.save does:
// each entry's data aligned (64 bytes by default, via a padding extra field)
// so readers can map tensors in place. ZIP64 records are written when sizes or
// offsets pass 32 bits, or always on request.
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace mm {

class ZipWriter {
 public:
  // what: the name used in error messages (usually the output path).
  ZipWriter(std::ostream& out, std::string what, bool force_zip64 = false);
  void add(const std::string& name, const void* data, uint64_t size, uint64_t align = 64);
  void finish();  // writes the central directory; no add() after it

 private:
  struct Written {
    std::string name;
    uint64_t size, offset;
    uint32_t crc;
    bool zip64;
  };
  void put(const void* p, uint64_t n);
  std::ostream& out_;
  std::string what_;
  bool force_zip64_;
  bool finished_ = false;
  uint64_t offset_ = 0;
  std::vector<Written> entries_;
};

}  // namespace mm
