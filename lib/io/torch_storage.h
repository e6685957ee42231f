#pragma once
// The torch storage classes a checkpoint names (torch.FloatStorage, ...), shared
// by the checkpoint reader and writer.
#include <cstddef>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mm {

struct TorchStorageType {
  const char* global;   // as pickled: "torch.FloatStorage"
  size_t element_size;
  bool supported;       // false: bool, int8, int16, complex (tolerated in ignored entries only)
  DType dtype;          // when supported
};

// Every storage class the unpickler lets through.
const std::vector<TorchStorageType>& torch_storage_types();
const TorchStorageType* find_torch_storage(const std::string& global);  // nullptr when unknown
const TorchStorageType& torch_storage_for(DType dtype);  // throws for dtypes without a storage class

}  // namespace mm
