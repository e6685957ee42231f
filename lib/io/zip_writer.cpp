#include "io/zip_writer.h"

#include <zlib.h>

#include "core/error.h"

namespace mm {

namespace {

constexpr uint32_t kSaturated32 = 0xffffffffu;
constexpr uint16_t kZip64ExtraId = 0x0001, kPaddingExtraId = 0x4246;  // "FB", torch's padding field id

class Bytes {  // little-endian record builder
 public:
  Bytes& u16(uint64_t v) { return le(v, 2); }
  Bytes& u32(uint64_t v) { return le(v, 4); }
  Bytes& u64(uint64_t v) { return le(v, 8); }
  Bytes& str(const std::string& s) { b_.insert(b_.end(), s.begin(), s.end()); return *this; }
  Bytes& fill(size_t n, uint8_t v) { b_.insert(b_.end(), n, v); return *this; }
  const std::vector<uint8_t>& data() const { return b_; }

 private:
  Bytes& le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b_.push_back(uint8_t(v >> (8 * i)));
    return *this;
  }
  std::vector<uint8_t> b_;
};

}  // namespace

ZipWriter::ZipWriter(std::ostream& out, std::string what, bool force_zip64)
    : out_(out), what_(std::move(what)), force_zip64_(force_zip64) {}

void ZipWriter::put(const void* p, uint64_t n) {
  out_.write(static_cast<const char*>(p), std::streamsize(n));
  if (!out_) throw Error(what_ + ": write failed");
  offset_ += n;
}

void ZipWriter::add(const std::string& name, const void* data, uint64_t size, uint64_t align) {
  MM_CHECK(!finished_, what_ + ": zip entry '" + name + "' added after finish()");
  MM_CHECK(name.size() < 0xffff, what_ + ": zip entry name too long");
  const bool zip64 = force_zip64_ || size >= kSaturated32 || offset_ >= kSaturated32;
  const uint32_t crc = uint32_t(crc32_z(0, static_cast<const Bytef*>(data), size_t(size)));
  const uint64_t zip64_len = zip64 ? 4 + 16 : 0;
  const uint64_t unpadded = offset_ + 30 + name.size() + zip64_len + 4;
  const uint64_t pad = align > 1 ? (align - unpadded % align) % align : 0;
  Bytes h;
  h.u32(0x04034b50).u16(zip64 ? 45 : 20).u16(0).u16(0).u16(0).u16(0).u32(crc);
  h.u32(zip64 ? kSaturated32 : size).u32(zip64 ? kSaturated32 : size);
  h.u16(name.size()).u16(zip64_len + 4 + pad).str(name);
  if (zip64) h.u16(kZip64ExtraId).u16(16).u64(size).u64(size);
  h.u16(kPaddingExtraId).u16(pad).fill(size_t(pad), 'Z');
  entries_.push_back({name, size, offset_, crc, zip64});
  put(h.data().data(), h.data().size());
  if (size) put(data, size);
}

void ZipWriter::finish() {
  MM_CHECK(!finished_, what_ + ": finish() called twice");
  finished_ = true;
  const uint64_t cd_offset = offset_;
  for (const Written& e : entries_) {
    Bytes h;
    h.u32(0x02014b50).u16(e.zip64 ? 45 : 20).u16(e.zip64 ? 45 : 20).u16(0).u16(0).u16(0).u16(0).u32(e.crc);
    h.u32(e.zip64 ? kSaturated32 : e.size).u32(e.zip64 ? kSaturated32 : e.size);
    h.u16(e.name.size()).u16(e.zip64 ? 4 + 24 : 0).u16(0).u16(0).u16(0).u32(0);
    h.u32(e.zip64 ? kSaturated32 : e.offset).str(e.name);
    if (e.zip64) h.u16(kZip64ExtraId).u16(24).u64(e.size).u64(e.size).u64(e.offset);
    put(h.data().data(), h.data().size());
  }
  const uint64_t cd_size = offset_ - cd_offset, count = entries_.size();
  const bool zip64 = force_zip64_ || count >= 0xffff || cd_offset >= kSaturated32 || cd_size >= kSaturated32;
  Bytes end;
  if (zip64) {
    const uint64_t z64_offset = offset_;
    end.u32(0x06064b50).u64(44).u16(45).u16(45).u32(0).u32(0).u64(count).u64(count).u64(cd_size).u64(cd_offset);
    end.u32(0x07064b50).u32(0).u64(z64_offset).u32(1);
  }
  end.u32(0x06054b50).u16(0).u16(0);
  end.u16(zip64 ? 0xffff : count).u16(zip64 ? 0xffff : count);
  end.u32(zip64 ? kSaturated32 : cd_size).u32(zip64 ? kSaturated32 : cd_offset).u16(0);
  put(end.data().data(), end.data().size());
  out_.flush();
  if (!out_) throw Error(what_ + ": write failed");
}

}  // namespace mm
