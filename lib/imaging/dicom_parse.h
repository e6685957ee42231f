#pragma once
// A DICOM file parsed by DCMTK, through a file stream: DCMTK then refuses
// element lengths larger than what remains of the file instead of allocating
// them, and defers loading values over 4 KiB (pixel data) until they are used,
// which is after our own size checks. A file whose dataset is not in the
// encoding its file meta says is read again in the encoding detected from its
// first element, as pydicom reads it.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>

#include <memory>
#include <string>

#include "data/image.h"

namespace mm::dicom {

// Throws ImageError naming `what`: Io (cannot open), NotRecognized (no DICM
// prefix and no plausible first element), Corrupt (DCMTK cannot parse it).
std::unique_ptr<DcmFileFormat> parse_file(const std::string& path, const std::string& what);

}  // namespace mm::dicom
