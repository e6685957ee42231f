#pragma once
// Unaligned integer loads from file bytes, in the byte order the format
// defines rather than the host's. The caller has checked the bounds.
#include <cstdint>

namespace mm {

inline uint16_t load_le16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
inline uint32_t load_le32(const uint8_t* p) { return uint32_t(load_le16(p)) | uint32_t(load_le16(p + 2)) << 16; }
inline uint64_t load_le64(const uint8_t* p) { return uint64_t(load_le32(p)) | uint64_t(load_le32(p + 4)) << 32; }

inline uint16_t load_be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t load_be32(const uint8_t* p) { return uint32_t(load_be16(p)) << 16 | load_be16(p + 2); }

inline uint16_t load_u16(const uint8_t* p, bool little) { return little ? load_le16(p) : load_be16(p); }
inline uint32_t load_u32(const uint8_t* p, bool little) { return little ? load_le32(p) : load_be32(p); }

}  // namespace mm
