#pragma once
// DCMTK's data dictionary gives implicit-VR files their value representations.
// Without it DCMTK still parses such files, but reads Rows, Columns and every
// other attribute as unknown bytes: each uncompressed image then looked corrupt
// ("pixel data without Rows or Columns"). Debian's DCMTK loads it from a file
// (/usr/share/libdcmtk17/dicom.dic, or DCMDICTPATH), which a machine the tools
// were copied to may lack; the package ships a copy in share/medmamba/.
#include <string>

namespace mm::dicom {

// Makes sure DCMTK's dictionary knows the standard attributes, once per process
// (thread-safe): when DCMTK's own loading found none and DCMDICTPATH is not set,
// loads <installed share>/dicom.dic, else DCMTK's usual /usr/share/libdcmtk*/dicom.dic.
// Throws ImageError naming `what`, the problem, where it looked and DCMDICTPATH
// when no dictionary can be had.
void require_data_dictionary(const std::string& what);

}  // namespace mm::dicom
