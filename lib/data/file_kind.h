#pragma once
// Which reader a file needs, decided from its content (extensions only break
// ties where the content cannot: a headerless .img, a gzipped NIfTI).
#include <cstdint>
#include <string>

namespace mm {

enum class FileKind { Unknown, Dicom, Nifti, Png, Jpeg, Tiff, Bmp, Npz };
const char* file_kind_name(FileKind k);

// head: the file's first bytes (at least 540 for NIfTI-2 detection, 132 for DICOM).
// name: the file name, used for gzip (.nii.gz) and Analyze (.hdr/.img) files.
FileKind detect_file_kind(const uint8_t* head, size_t size, const std::string& name);
// Reads up to 1 KiB of the file and calls the above; throws mm::Error when unreadable.
FileKind detect_file_kind(const std::string& path);

// "DICM" at offset 128, or a plausible first data element at offset 0 (a bare
// dataset: explicit or implicit VR, little or big endian).
bool looks_like_dicom(const uint8_t* head, size_t size);
// sizeof_hdr 348 (NIfTI-1/Analyze) or 540 (NIfTI-2) in either byte order.
bool looks_like_nifti_header(const uint8_t* head, size_t size);

}  // namespace mm
