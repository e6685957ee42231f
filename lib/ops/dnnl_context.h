#pragma once
// The one oneDNN CPU engine and stream the bf16 and int8 ops share (oneDNN builds only).
#ifdef MM_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>

namespace mm {

inline dnnl::engine& dnnl_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

inline dnnl::stream& dnnl_stream() {
  static dnnl::stream s(dnnl_engine());
  return s;
}

}  // namespace mm
#endif
