#pragma once
// Whole-file reads for the formats we parse from memory (safetensors, zip,
// torch checkpoints). The allocation is the file's real size, never a size a
// header claims.
#include <cstdint>
#include <string>
#include <vector>

namespace mm {

// Throws mm::Error "<path>: <reason>" when the file cannot be opened or read.
std::vector<uint8_t> read_file_bytes(const std::string& path);

}  // namespace mm
