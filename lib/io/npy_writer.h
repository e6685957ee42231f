#pragma once
// NumPy .npy files (format 1.0, little-endian float32, C order): what
// `numpy.load` reads, for arrays a user should be able to inspect.
#include <cstdint>
#include <string>
#include <vector>

namespace mm {

std::vector<uint8_t> encode_npy_f32(const float* data, const std::vector<int64_t>& shape);
// Creates missing parent folders. Throws mm::Error naming the file when it cannot be written.
void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);

}  // namespace mm
