#include "io/zip_reader.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "core/byte_order.h"
#include "core/error.h"
#include "io/file_bytes.h"

namespace mm {

namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50, kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50, kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22, kZip64LocatorSize = 20, kZip64EndSize = 56;
constexpr size_t kCentralHeaderSize = 46, kLocalHeaderSize = 30;
// Deflate cannot expand by more than about 1032:1 (RFC 1951 maximum run
// encoding); an entry claiming more is a decompression bomb or corrupt.
constexpr uint64_t kMaxDeflateRatio = 1032;

// Bounds-checked cursor over the archive bytes; every read names what it wanted.
class Cursor {
 public:
  Cursor(const std::vector<uint8_t>& bytes, const std::string& what) : b_(bytes), what_(what) {}
  // Pointer to [offset, offset+len), or an error naming `field`.
  const uint8_t* at(uint64_t offset, uint64_t len, const char* field) const {
    if (offset > b_.size() || len > b_.size() - offset)
      throw Error(what_ + ": " + field + " at offset " + std::to_string(offset) + " (+" + std::to_string(len) +
                  " bytes) lies outside the " + std::to_string(b_.size()) + "-byte archive (truncated or corrupt zip)");
    return b_.data() + offset;
  }

 private:
  const std::vector<uint8_t>& b_;
  const std::string& what_;
};

// The ZIP64 extended-information extra field (id 1) holds, in this order, the
// 64-bit values of whichever 32-bit central-directory fields are saturated.
void apply_zip64_extra(ZipEntry& e, const uint8_t* extra, size_t len, bool need_usize, bool need_csize,
                       bool need_offset, const std::string& what) {
  size_t pos = 0;
  while (pos + 4 <= len) {
    const uint16_t id = load_le16(extra + pos), size = load_le16(extra + pos + 2);
    const uint8_t* body = extra + pos + 4;
    if (pos + 4 + size > len) break;  // a malformed trailing field: the saturated check below reports it
    if (id == 1) {
      size_t k = 0;
      auto take = [&](uint64_t& dst, const char* field) {
        if (k + 8 > size) throw Error(what + ": entry '" + e.name + "': ZIP64 extra field lacks the " + field);
        dst = load_le64(body + k);
        k += 8;
      };
      if (need_usize) take(e.uncompressed_size, "uncompressed size");
      if (need_csize) take(e.compressed_size, "compressed size");
      if (need_offset) take(e.local_header_offset, "local header offset");
      return;
    }
    pos += 4 + size;
  }
  if (need_usize || need_csize || need_offset)
    throw Error(what + ": entry '" + e.name + "' has 32-bit fields marked as ZIP64 but no ZIP64 extra field");
}

// Inflates a raw deflate stream that must produce exactly `declared` bytes.
// The buffer grows with the output actually produced, so a lying size in the
// directory costs no more memory than the data really inflates to.
template <class Fail>
std::vector<uint8_t> inflate_exact(const uint8_t* in, uint64_t in_size, uint64_t declared, const Fail& fail) {
  std::vector<uint8_t> out(size_t(std::min<uint64_t>(declared, std::max<uint64_t>(uint64_t(1) << 16, 4 * in_size))));
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) throw fail("zlib initialisation failed");
  // zlib counts in 32-bit uInt: feed and drain in chunks so entries over 4 GiB work.
  constexpr uint64_t kChunk = uint64_t(1) << 30;
  uint64_t in_left = in_size, done = 0;
  uint8_t no_output;  // zlib refuses a null next_out even when nothing is to be written
  int rc = Z_OK;
  while (rc == Z_OK) {
    if (zs.avail_in == 0 && in_left > 0) {
      zs.next_in = const_cast<Bytef*>(in);
      zs.avail_in = uInt(std::min(in_left, kChunk));
      in += zs.avail_in;
      in_left -= zs.avail_in;
    }
    if (done == out.size() && out.size() < declared) out.resize(size_t(std::min<uint64_t>(declared, 2 * out.size())));
    const uint64_t room = std::min<uint64_t>(out.size() - done, kChunk);
    zs.next_out = room ? out.data() + done : &no_output;
    zs.avail_out = uInt(room);
    rc = inflate(&zs, Z_NO_FLUSH);
    done += room - zs.avail_out;
    if (rc == Z_BUF_ERROR) {
      if (zs.avail_in == 0 && in_left == 0) break;  // the input ended before the stream did
      if (room == 0) break;                          // the stream goes on past the declared size
      rc = Z_OK;                                     // a chunk boundary
    }
  }
  const std::string zlib_msg = zs.msg ? zs.msg : "";
  inflateEnd(&zs);
  if (rc != Z_STREAM_END)
    throw fail("corrupt deflate data (" + (zlib_msg.empty() ? std::string("truncated, or longer than its declared size") : zlib_msg) + ")");
  if (done != declared)
    throw fail("inflated to " + std::to_string(done) + " bytes, the directory says " + std::to_string(declared));
  return out;
}

}  // namespace

bool looks_like_zip(const uint8_t* p, size_t n) { return n >= 4 && load_le32(p) == kLocalHeaderSig; }

ZipReader ZipReader::open_file(const std::string& path) { return from_bytes(read_file_bytes(path), path); }

ZipReader ZipReader::from_bytes(std::vector<uint8_t> bytes, std::string what) {
  ZipReader z;
  z.bytes_ = std::move(bytes);
  z.what_ = std::move(what);
  const std::vector<uint8_t>& b = z.bytes_;
  const Cursor cur(b, z.what_);
  auto fail = [&](const std::string& why) { return Error(z.what_ + ": " + why); };
  if (b.size() < kEndSize) throw fail("too short for a zip archive (" + std::to_string(b.size()) + " bytes)");

  // The end-of-central-directory record sits in the last 22 + up to 65535 (comment) bytes.
  size_t end_pos = SIZE_MAX;
  const size_t lowest = b.size() - kEndSize > 0xffff ? b.size() - kEndSize - 0xffff : 0;
  for (size_t p = b.size() - kEndSize + 1; p-- > lowest;) {
    if (load_le32(b.data() + p) == kEndSig && p + kEndSize + load_le16(b.data() + p + 20) <= b.size()) {
      end_pos = p;
      break;
    }
  }
  if (end_pos == SIZE_MAX) throw fail("no zip end-of-central-directory record (truncated or not a zip archive)");
  const uint8_t* end = b.data() + end_pos;
  if (load_le16(end + 4) != 0 || load_le16(end + 6) != 0) throw fail("multi-disk zip archives are not supported");
  uint64_t count = load_le16(end + 10), cd_size = load_le32(end + 12), cd_offset = load_le32(end + 16);

  if (end_pos >= kZip64LocatorSize && load_le32(b.data() + end_pos - kZip64LocatorSize) == kZip64LocatorSig) {
    const uint64_t z64_offset = load_le64(b.data() + end_pos - kZip64LocatorSize + 8);
    const uint8_t* z64 = cur.at(z64_offset, kZip64EndSize, "ZIP64 end-of-central-directory record");
    if (load_le32(z64) != kZip64EndSig) throw fail("ZIP64 locator points at no ZIP64 end-of-central-directory record");
    count = load_le64(z64 + 32);
    cd_size = load_le64(z64 + 40);
    cd_offset = load_le64(z64 + 48);
  }
  const uint8_t* cd = cur.at(cd_offset, cd_size, "central directory");
  // Each central header takes at least 46 bytes: a larger count is a lie, refused before reserving.
  if (count > cd_size / kCentralHeaderSize)
    throw fail("central directory claims " + std::to_string(count) + " entries in " + std::to_string(cd_size) +
               " bytes");
  z.entries_.reserve(size_t(count));
  uint64_t pos = 0;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_size - pos < kCentralHeaderSize) throw fail("central directory entry " + std::to_string(i) + " truncated");
    const uint8_t* h = cd + pos;
    if (load_le32(h) != kCentralHeaderSig) throw fail("central directory entry " + std::to_string(i) + " has a bad signature");
    const uint16_t name_len = load_le16(h + 28), extra_len = load_le16(h + 30), comment_len = load_le16(h + 32);
    if (cd_size - pos - kCentralHeaderSize < uint64_t(name_len) + extra_len + comment_len)
      throw fail("central directory entry " + std::to_string(i) + " runs past the directory");
    ZipEntry e;
    e.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_len);
    if (load_le16(h + 8) & 1) throw fail("entry '" + e.name + "' is encrypted");
    e.method = load_le16(h + 10);
    e.crc32 = load_le32(h + 16);
    e.compressed_size = load_le32(h + 20);
    e.uncompressed_size = load_le32(h + 24);
    e.local_header_offset = load_le32(h + 42);
    const bool z64_usize = e.uncompressed_size == 0xffffffffu, z64_csize = e.compressed_size == 0xffffffffu,
               z64_offset = e.local_header_offset == 0xffffffffu;
    if (z64_usize || z64_csize || z64_offset)
      apply_zip64_extra(e, h + kCentralHeaderSize + name_len, extra_len, z64_usize, z64_csize, z64_offset, z.what_);
    z.entries_.push_back(std::move(e));
    pos += kCentralHeaderSize + name_len + extra_len + comment_len;
  }
  return z;
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  for (const ZipEntry& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

std::vector<uint8_t> ZipReader::read(const std::string& name, uint64_t max_bytes) const {
  const ZipEntry* e = find(name);
  if (!e) throw Error(what_ + ": no entry '" + name + "' in the archive");
  return read(*e, max_bytes);
}

std::vector<uint8_t> ZipReader::read(const ZipEntry& e, uint64_t max_bytes) const {
  const Cursor cur(bytes_, what_);
  auto fail = [&](const std::string& why) { return Error(what_ + ": entry '" + e.name + "': " + why); };
  const uint8_t* local = cur.at(e.local_header_offset, kLocalHeaderSize, "local file header");
  if (load_le32(local) != kLocalHeaderSig) throw fail("bad local header signature");
  const uint64_t data_offset = e.local_header_offset + kLocalHeaderSize + load_le16(local + 26) + load_le16(local + 28);
  const uint8_t* data = cur.at(data_offset, e.compressed_size, "entry data");
  if (e.uncompressed_size > max_bytes)
    throw fail(std::to_string(e.uncompressed_size) + " bytes exceeds the limit of " + std::to_string(max_bytes));

  std::vector<uint8_t> out;
  if (e.method == 0) {
    if (e.compressed_size != e.uncompressed_size)
      throw fail("stored entry with compressed size " + std::to_string(e.compressed_size) + " != size " +
                 std::to_string(e.uncompressed_size));
    out.assign(data, data + e.compressed_size);
  } else if (e.method == 8) {
    if (e.uncompressed_size / kMaxDeflateRatio > e.compressed_size + 1)
      throw fail("claims " + std::to_string(e.uncompressed_size) + " bytes from " +
                 std::to_string(e.compressed_size) + " compressed, more than deflate can produce");
    out = inflate_exact(data, e.compressed_size, e.uncompressed_size, fail);
  } else {
    throw fail("compression method " + std::to_string(e.method) + " is not supported (only stored and deflate)");
  }
  const uint32_t crc = uint32_t(crc32_z(0, out.data(), out.size()));
  if (crc != e.crc32) throw fail("CRC mismatch (corrupt archive)");
  return out;
}

}  // namespace mm
