#pragma once
// A dense, contiguous, row-major tensor in CPU or CUDA memory.
// Storage is shared between copies of a Tensor (like torch): copying a Tensor
// aliases; use clone() for a deep copy.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mm {

enum class DType : uint8_t { F32, F16, BF16, F64, I64, I32, U8, I8 };  // I8: quantised weights
enum class Device : uint8_t { CPU, CUDA };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);  // safetensors spelling: "F32", "BF16", ...
DType dtype_from_name(const std::string& name);  // throws on unknown
bool cuda_available();             // false when built without CUDA or no device present

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(Shape shape, DType dt = DType::F32, Device dev = Device::CPU);
  static Tensor zeros(Shape shape, DType dt = DType::F32, Device dev = Device::CPU);
  // Non-owning view of memory that outlives the tensor.
  static Tensor wrap(void* ptr, Shape shape, DType dt = DType::F32, Device dev = Device::CPU);
  // Alias of this tensor's storage at an element offset with a new shape.
  Tensor slice_view(int64_t elem_offset, Shape shape) const;

  bool defined() const { return ptr_ != nullptr || numel() == 0; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const { return shape_.at(i < 0 ? i + ndim() : i); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  void* data() { return ptr_; }
  const void* data() const { return ptr_; }
  float* f32();              // checks: F32 on CPU
  const float* f32() const;
  template <class T> T* as() { return static_cast<T*>(ptr_); }
  template <class T> const T* as() const { return static_cast<const T*>(ptr_); }

  Tensor to(DType dt) const;      // CPU only: converts between float types (and ints to float)
  Tensor to(Device dev) const;    // copies between host and CUDA memory
  Tensor clone() const;
  // Copies src's bytes in, across devices; src must have this tensor's dtype and numel.
  void copy_from(const Tensor& src);
  Tensor reshape(Shape shape) const;  // same storage, same numel
  void zero_();

 private:
  std::shared_ptr<void> storage_;
  void* ptr_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
};

}  // namespace mm
