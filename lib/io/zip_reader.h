#pragma once
// Read-only ZIP archive access (stored and deflate entries, ZIP64 sizes), for
// PyTorch checkpoints (torch.save's zip format) and NumPy .npz files.
// Hostile archives give mm::Error naming the archive and the reason; sizes are
// checked against the archive length and a caller-given cap before allocating.
#include <cstdint>
#include <string>
#include <vector>

namespace mm {

struct ZipEntry {
  std::string name;
  uint64_t compressed_size = 0, uncompressed_size = 0;
  uint64_t local_header_offset = 0;
  uint16_t method = 0;  // 0 stored, 8 deflate
  uint32_t crc32 = 0;
};

class ZipReader {
 public:
  // Reads the whole archive into memory (what: the name used in error messages).
  static ZipReader open_file(const std::string& path);
  static ZipReader from_bytes(std::vector<uint8_t> bytes, std::string what);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;  // nullptr when absent
  // Decompressed contents; refuses entries larger than max_bytes, checks the CRC.
  std::vector<uint8_t> read(const ZipEntry& e, uint64_t max_bytes = uint64_t(1) << 34) const;
  std::vector<uint8_t> read(const std::string& name, uint64_t max_bytes = uint64_t(1) << 34) const;
  const std::string& what() const { return what_; }
  uint64_t archive_size() const { return bytes_.size(); }

 private:
  std::vector<uint8_t> bytes_;
  std::vector<ZipEntry> entries_;
  std::string what_;
};

// True when the bytes start like a ZIP archive ("PK\3\4").
bool looks_like_zip(const uint8_t* p, size_t n);

}  // namespace mm
