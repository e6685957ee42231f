#pragma once
// A std::vector whose resize() leaves new elements of trivial types uninitialised, for
// buffers that a read or a decoder overwrites at once: zero-filling a 0.5 MB DICOM file's
// buffer before fread() fills it doubled the memory written per file.
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace mm {

template <class T>
struct UninitialisedAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitialisedAllocator<U>;
  };
  UninitialisedAllocator() = default;
  template <class U>
  UninitialisedAllocator(const UninitialisedAllocator<U>&) noexcept {}

  // Value-initialisation (what resize() asks for) becomes default-initialisation.
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible<U>::value) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

using UninitialisedBytes = std::vector<uint8_t, UninitialisedAllocator<uint8_t>>;

}  // namespace mm
