#include "serve/dicom_output.h"

#include "core/error.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "serve/durable_files.h"

namespace mm::serve {

void check_dicom(const OFCondition& c, const std::string& what) {
  if (c.bad()) throw Error(what + ": " + c.text());
}

void copy_patient_and_study(DcmDataset& source, DcmDataset& target, bool with_study_uid) {
  static const DcmTagKey kCopied[] = {
      DCM_PatientName, DCM_PatientID,       DCM_PatientBirthDate,       DCM_PatientSex,
      DCM_StudyDate,   DCM_StudyTime,       DCM_StudyID,                DCM_AccessionNumber,
      DCM_ReferringPhysicianName, DCM_StudyDescription, DCM_SpecificCharacterSet};
  for (const DcmTagKey& tag : kCopied) {
    OFString value;
    if (source.findAndGetOFStringArray(tag, value).good()) target.putAndInsertOFStringArray(tag, value);
  }
  OFString study;
  if (with_study_uid && source.findAndGetOFString(DCM_StudyInstanceUID, study).good())
    target.putAndInsertOFStringArray(DCM_StudyInstanceUID, study);
}

std::string save_durably(DcmFileFormat& file, const std::string& folder) {
  OFString uid;
  check_dicom(file.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, uid), folder + ": an object without a SOP Instance UID");
  const std::string path = folder + "/" + uid.c_str() + ".dcm";
  const std::string tmp = folder + "/.tmp-" + uid.c_str() + ".dcm";
  check_dicom(file.saveFile(tmp.c_str(), EXS_LittleEndianExplicit), tmp);
  durable_commit(tmp, path);
  return path;
}

}  // namespace mm::serve
