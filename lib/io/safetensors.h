#pragma once
// safetensors: 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"key": "string value", ...}}, then the raw data.
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mm {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;       // CPU tensors, sorted by name
  std::map<std::string, std::string> metadata;  // "__metadata__" (string -> string)

  const Tensor& at(const std::string& name) const;  // throws naming the missing tensor
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
};

// Reads a whole file. Throws mm::Error naming the file and the reason on any
// malformed input; sizes are validated against the file length before allocating.
SafetensorsFile read_safetensors(const std::string& path);
SafetensorsFile parse_safetensors(const void* bytes, size_t size, const std::string& what);

// Writes CPU tensors (any device is copied to host first).
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace mm
