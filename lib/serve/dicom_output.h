#pragma once
// What the DICOM objects mm-serve writes (series SRs, saliency Secondary
// Captures) share: the source's patient and study attributes, and the durable
// write under the object's SOP Instance UID.
#include <string>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcfilefo.h"

namespace mm::serve {

// Throws mm::Error "<what>: <DCMTK's text>" when `c` is bad.
void check_dicom(const OFCondition& c, const std::string& what);

// Copies the patient and general study attributes present in `source` (and its
// Specific Character Set) to `target`; Study Instance UID only when `with_study_uid`.
void copy_patient_and_study(DcmDataset& source, DcmDataset& target, bool with_study_uid);

// Writes <folder>/<SOP Instance UID>.dcm (explicit little endian) through a
// temporary name, fsync and rename; returns its path.
std::string save_durably(DcmFileFormat& file, const std::string& folder);

}  // namespace mm::serve
