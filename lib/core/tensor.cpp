#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/cuda_memory.h"
#include "core/error.h"
#include "core/half.h"

namespace mm {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F64: return 8;
    case DType::I64: return 8;
    case DType::I32: return 4;
    case DType::U8: return 1;
    case DType::I8: return 1;
  }
  return 0;
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
    case DType::I8: return "I8";
  }
  return "?";
}

DType dtype_from_name(const std::string& n) {
  if (n == "F32") return DType::F32;
  if (n == "F16") return DType::F16;
  if (n == "BF16") return DType::BF16;
  if (n == "F64") return DType::F64;
  if (n == "I64") return DType::I64;
  if (n == "I32") return DType::I32;
  if (n == "U8") return DType::U8;
  if (n == "I8") return DType::I8;
  throw Error("unsupported dtype '" + n + "'");
}

bool cuda_available() {
#ifdef MM_HAVE_CUDA
  return cuda::device_present();
#else
  return false;
#endif
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

static std::shared_ptr<void> allocate(size_t bytes, Device dev) {
  if (dev == Device::CUDA) {
#ifdef MM_HAVE_CUDA
    return std::shared_ptr<void>(cuda::malloc_device(bytes), cuda::free_device);
#else
    throw Error("this build has no CUDA backend");
#endif
  }
  // 64-byte alignment keeps AVX-512 loads on one cache line.
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
  return std::shared_ptr<void>(p, std::free);
}

Tensor Tensor::empty(Shape shape, DType dt, Device dev) {
  for (int64_t d : shape) MM_CHECK(d >= 0, "negative dimension in shape " + shape_str(shape));
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dt;
  t.device_ = dev;
  t.storage_ = allocate(t.nbytes(), dev);
  t.ptr_ = t.storage_.get();
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dt, Device dev) {
  Tensor t = empty(std::move(shape), dt, dev);
  t.zero_();
  return t;
}

Tensor Tensor::wrap(void* ptr, Shape shape, DType dt, Device dev) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dt;
  t.device_ = dev;
  t.ptr_ = ptr;
  return t;
}

Tensor Tensor::slice_view(int64_t elem_offset, Shape shape) const {
  MM_CHECK(elem_offset >= 0 && elem_offset + shape_numel(shape) <= numel(),
           "slice_view out of range: offset " + std::to_string(elem_offset) + " shape " +
               shape_str(shape) + " in " + shape_str(shape_));
  Tensor t = *this;
  t.ptr_ = static_cast<char*>(ptr_) + elem_offset * dtype_size(dtype_);
  t.shape_ = std::move(shape);
  return t;
}

float* Tensor::f32() {
  MM_CHECK(dtype_ == DType::F32 && device_ == Device::CPU,
           std::string("expected a float32 CPU tensor, got ") + dtype_name(dtype_));
  return static_cast<float*>(ptr_);
}

const float* Tensor::f32() const { return const_cast<Tensor*>(this)->f32(); }

static float load_as_float(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F16: return f16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::BF16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::F64: return float(static_cast<const double*>(p)[i]);
    case DType::I64: return float(static_cast<const int64_t*>(p)[i]);
    case DType::I32: return float(static_cast<const int32_t*>(p)[i]);
    case DType::U8: return float(static_cast<const uint8_t*>(p)[i]);
    case DType::I8: return float(static_cast<const int8_t*>(p)[i]);
  }
  return 0.f;
}

Tensor Tensor::to(DType dt) const {
  MM_CHECK(device_ == Device::CPU, "dtype conversion needs a CPU tensor");
  if (dt == dtype_) return *this;
  Tensor out = empty(shape_, dt);
  const int64_t n = numel();
  switch (dt) {
    case DType::F32: {
      float* o = out.as<float>();
      for (int64_t i = 0; i < n; ++i) o[i] = load_as_float(ptr_, dtype_, i);
      break;
    }
    case DType::F16: {
      uint16_t* o = out.as<uint16_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = float_to_f16(load_as_float(ptr_, dtype_, i));
      break;
    }
    case DType::BF16: {
      uint16_t* o = out.as<uint16_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = float_to_bf16(load_as_float(ptr_, dtype_, i));
      break;
    }
    case DType::F64: {
      double* o = out.as<double>();
      if (dtype_ == DType::I64)
        for (int64_t i = 0; i < n; ++i) o[i] = double(as<int64_t>()[i]);
      else
        for (int64_t i = 0; i < n; ++i) o[i] = load_as_float(ptr_, dtype_, i);
      break;
    }
    default:
      throw Error(std::string("cannot convert ") + dtype_name(dtype_) + " to " + dtype_name(dt));
  }
  return out;
}

Tensor Tensor::to(Device dev) const {
  if (dev == device_) return *this;
  Tensor out = empty(shape_, dtype_, dev);
#ifdef MM_HAVE_CUDA
  cuda::copy(out.ptr_, ptr_, nbytes(),
             dev == Device::CUDA ? cuda::Copy::HostToDevice : cuda::Copy::DeviceToHost);
#endif
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, dtype_, device_);
  if (device_ == Device::CPU) {
    if (nbytes()) std::memcpy(out.ptr_, ptr_, nbytes());
  } else {
#ifdef MM_HAVE_CUDA
    cuda::copy(out.ptr_, ptr_, nbytes(), cuda::Copy::DeviceToDevice);
#endif
  }
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  MM_CHECK(src.dtype_ == dtype_ && src.numel() == numel(),
           "copy_from: " + shape_str(src.shape_) + " " + dtype_name(src.dtype_) + " into " + shape_str(shape_) + " " +
               dtype_name(dtype_));
  if (!nbytes()) return;
  if (device_ == Device::CPU && src.device_ == Device::CPU) {
    std::memcpy(ptr_, src.ptr_, nbytes());
    return;
  }
#ifdef MM_HAVE_CUDA
  const cuda::Copy kind = src.device_ == Device::CPU ? cuda::Copy::HostToDevice
                          : device_ == Device::CPU   ? cuda::Copy::DeviceToHost
                                                     : cuda::Copy::DeviceToDevice;
  cuda::copy(ptr_, src.ptr_, nbytes(), kind);
#else
  throw Error("this build has no CUDA backend");
#endif
}

Tensor Tensor::reshape(Shape shape) const {
  MM_CHECK(shape_numel(shape) == numel(),
           "reshape " + shape_str(shape_) + " to " + shape_str(shape) + " changes numel");
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

void Tensor::zero_() {
  if (!nbytes()) return;
  if (device_ == Device::CPU) {
    std::memset(ptr_, 0, nbytes());
  } else {
#ifdef MM_HAVE_CUDA
    cuda::memset_zero(ptr_, nbytes());
#endif
  }
}

}  // namespace mm
