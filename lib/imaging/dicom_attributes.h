#pragma once
// The attributes of a DCMTK dataset that say how to turn its pixel data into an
// Image: the Image Pixel module, the Modality LUT (sequence or rescale), the
// palette tables and the VOI LUT module (windows and VOI LUT Sequence).
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcitem.h>

#include <string>

#include "imaging/dicom_pixels.h"

namespace mm::dicom {

// The value of a string attribute, or "" when absent or unreadable.
std::string get_string(DcmItem& item, const DcmTagKey& tag);

// The Image Pixel and Modality LUT attributes (after any decompression). Throws
// ImageError (Corrupt) naming `what` when Rows, Columns or BitsAllocated are
// missing, NumberOfFrames is unreadable, or a table is shorter than its descriptor.
PixelLayout read_layout(DcmItem& ds, PixelLayout::Kind kind, const std::string& what);

// The VOI LUT module: window pairs with a positive width, and the VOI LUT
// Sequence items that hold a descriptor and data (others are skipped, as pydicom
// does). signed_pixels: PixelRepresentation, which decides the sign of a table's
// first mapped value.
FileVoi read_voi(DcmItem& ds, bool signed_pixels, const std::string& what);

}  // namespace mm::dicom
