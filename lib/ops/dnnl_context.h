#pragma once
// The oneDNN CPU engine the bf16 and int8 ops share, and what lets several threads run their
// primitives at once (oneDNN builds only).
//
// The sub-batch workers (model/cpu_batch_split.h) execute the same primitives concurrently.
// oneDNN allows that when the primitive's scratchpad is the caller's
// (scratchpad_mode::user, given per execution): its default library scratchpad, in the
// default build (DNNL_ENABLE_CONCURRENT_EXEC=OFF), is shared by all primitives and ties each
// one to the thread that created it. A stream is not thread-safe either: one per thread.
// The primitive caches of the ops take a mutex to look up or add one.
#ifdef MM_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

namespace mm {

inline dnnl::engine& dnnl_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

inline dnnl::stream& dnnl_stream() {
  thread_local dnnl::stream s(dnnl_engine());
  return s;
}

// Attributes for a primitive that runs with dnnl_scratchpad() (what every bf16/int8 op makes).
inline dnnl::primitive_attr dnnl_user_scratchpad_attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// This thread's scratchpad as a memory of the layout a primitive asked for (its
// primitive_desc's scratchpad_desc()), grown as needed and kept for the thread's life.
inline dnnl::memory dnnl_scratchpad(const dnnl::memory::desc& want) {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  thread_local std::unique_ptr<void, Free> bytes;
  thread_local size_t capacity = 0;
  const size_t need = want.get_size();
  if (need > capacity) {
    const size_t rounded = (need + 63) / 64 * 64;
    bytes.reset(std::aligned_alloc(64, rounded));
    if (!bytes) throw std::bad_alloc();
    capacity = rounded;
  }
  return dnnl::memory(want, dnnl_engine(), need ? bytes.get() : nullptr);
}

}  // namespace mm
#endif
