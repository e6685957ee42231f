#pragma once
// mm-serve logs through DCMTK's OFLog ("mm.serve"), so that one --log-level
// (or -q/-v/-d) governs our lines and dcmnet's alike, as in DCMTK's tools.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/oflog/oflog.h"

namespace mm::serve {

inline OFLogger& serve_logger() {
  static OFLogger logger = OFLog::getLogger("mm.serve");
  return logger;
}

}  // namespace mm::serve
