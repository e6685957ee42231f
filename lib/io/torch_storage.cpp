#include "io/torch_storage.h"

#include "core/error.h"

namespace mm {

const std::vector<TorchStorageType>& torch_storage_types() {
  static const std::vector<TorchStorageType> types = {
      {"torch.FloatStorage", 4, true, DType::F32},     {"torch.HalfStorage", 2, true, DType::F16},
      {"torch.BFloat16Storage", 2, true, DType::BF16}, {"torch.DoubleStorage", 8, true, DType::F64},
      {"torch.LongStorage", 8, true, DType::I64},      {"torch.IntStorage", 4, true, DType::I32},
      {"torch.ByteStorage", 1, true, DType::U8},       {"torch.ShortStorage", 2, false, DType::U8},
      {"torch.CharStorage", 1, false, DType::U8},      {"torch.BoolStorage", 1, false, DType::U8},
      {"torch.ComplexFloatStorage", 8, false, DType::U8}, {"torch.ComplexDoubleStorage", 16, false, DType::U8},
  };
  return types;
}

const TorchStorageType* find_torch_storage(const std::string& global) {
  for (const TorchStorageType& t : torch_storage_types())
    if (global == t.global) return &t;
  return nullptr;
}

const TorchStorageType& torch_storage_for(DType dtype) {
  for (const TorchStorageType& t : torch_storage_types())
    if (t.supported && t.dtype == dtype) return t;
  throw Error(std::string("no torch storage type for dtype ") + dtype_name(dtype));
}

}  // namespace mm
