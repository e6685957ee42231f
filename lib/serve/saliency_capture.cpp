#include "serve/saliency_capture.h"

#include <cmath>
#include <cstdio>
#include <ctime>

#include "core/error.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcitem.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "imaging/picture_decode.h"
#include "predict/inputs.h"
#include "serve/dicom_output.h"

namespace mm::serve {

namespace {

const char* const kNotForClinicalUse =
    "Research software output. Not for clinical use: not a medical device, not validated for diagnosis.";

std::string new_uid() {
  char uid[100];
  dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT);
  return uid;
}

// Image storage SOP classes whose IODs have the Multi-frame module: only a
// reference to one of them may name a frame (PS3.3 C.7.6.1.1.3; dciodvfy
// rejects Referenced Frame Number otherwise, e.g. for a Secondary Capture that
// carries Number of Frames anyway). Classes missing here are referenced whole.
bool is_multiframe_sop_class(const std::string& uid) {
  static const char* const kMultiframe[] = {
      "1.2.840.10008.5.1.4.1.1.3.1",    "1.2.840.10008.5.1.4.1.1.7.1",    "1.2.840.10008.5.1.4.1.1.7.2",
      "1.2.840.10008.5.1.4.1.1.7.3",    "1.2.840.10008.5.1.4.1.1.7.4",    "1.2.840.10008.5.1.4.1.1.2.1",
      "1.2.840.10008.5.1.4.1.1.2.2",    "1.2.840.10008.5.1.4.1.1.4.1",    "1.2.840.10008.5.1.4.1.1.4.3",
      "1.2.840.10008.5.1.4.1.1.4.4",    "1.2.840.10008.5.1.4.1.1.6.2",    "1.2.840.10008.5.1.4.1.1.12.1",
      "1.2.840.10008.5.1.4.1.1.12.1.1", "1.2.840.10008.5.1.4.1.1.12.2",   "1.2.840.10008.5.1.4.1.1.12.2.1",
      "1.2.840.10008.5.1.4.1.1.13.1.1", "1.2.840.10008.5.1.4.1.1.13.1.2", "1.2.840.10008.5.1.4.1.1.13.1.3",
      "1.2.840.10008.5.1.4.1.1.13.1.4", "1.2.840.10008.5.1.4.1.1.13.1.5", "1.2.840.10008.5.1.4.1.1.20",
      "1.2.840.10008.5.1.4.1.1.128.1",  "1.2.840.10008.5.1.4.1.1.130",    "1.2.840.10008.5.1.4.1.1.77.1.6",
      "1.2.840.10008.5.1.4.1.1.77.1.5.1", "1.2.840.10008.5.1.4.1.1.77.1.5.2", "1.2.840.10008.5.1.4.1.1.77.1.5.4",
      "1.2.840.10008.5.1.4.1.1.14.1",   "1.2.840.10008.5.1.4.1.1.14.2",   "1.2.840.10008.5.1.4.1.1.30",
  };
  for (const char* m : kMultiframe)
    if (uid == m) return true;
  return false;
}

void put(DcmItem& item, const DcmTagKey& tag, const std::string& value) {
  check_dicom(item.putAndInsertOFStringArray(tag, value.c_str()), "saliency capture: " + std::string(DcmTag(tag).getTagName()));
}

// The overlay PNG as interleaved 8-bit RGB.
std::vector<uint8_t> read_rgb_png(const std::string& path, int64_t& width, int64_t& height) {
  const picture::RawImage png = picture::decode_picture(path, picture::Format::Png, uint64_t(1) << 28);
  MM_CHECK(png.dims.size() == 2 && png.components == 3 && png.component_type == "unsigned_char",
           path + ": not the 8-bit RGB overlay the pipeline writes");
  width = png.dims[0];
  height = png.dims[1];
  std::vector<uint8_t> rgb(png.data.size());
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(std::lround(png.data[i]));
  return rgb;
}

void put_pixels(DcmDataset& ds, const std::vector<uint8_t>& rgb, int64_t width, int64_t height) {
  check_dicom(ds.putAndInsertUint16(DCM_SamplesPerPixel, 3), "saliency capture: pixels");
  put(ds, DCM_PhotometricInterpretation, "RGB");
  check_dicom(ds.putAndInsertUint16(DCM_PlanarConfiguration, 0), "saliency capture: pixels");
  check_dicom(ds.putAndInsertUint16(DCM_Rows, uint16_t(height)), "saliency capture: pixels");
  check_dicom(ds.putAndInsertUint16(DCM_Columns, uint16_t(width)), "saliency capture: pixels");
  check_dicom(ds.putAndInsertUint16(DCM_BitsAllocated, 8), "saliency capture: pixels");
  check_dicom(ds.putAndInsertUint16(DCM_BitsStored, 8), "saliency capture: pixels");
  check_dicom(ds.putAndInsertUint16(DCM_HighBit, 7), "saliency capture: pixels");
  check_dicom(ds.putAndInsertUint16(DCM_PixelRepresentation, 0), "saliency capture: pixels");
  check_dicom(ds.putAndInsertUint8Array(DCM_PixelData, rgb.data(), rgb.size()), "saliency capture: pixels");
}

}  // namespace

SaliencyCaptures::SaliencyCaptures(MedMamba& model, const std::string& model_name, const std::string& work_folder,
                                   const std::string& out_folder)
    : model_(model), model_name_(model_name), work_(work_folder), out_(out_folder) {}

std::string SaliencyCaptures::png_of(const std::string& root, const Prediction& p) const {
  return work_ + "/" + derived_file_name(root, p.path, p.frame, p.slice, ".png");
}

std::string SaliencyCaptures::write(const SaliencyItem& item) {
  int64_t width = 0, height = 0;
  const std::vector<uint8_t> rgb = read_rgb_png(item.png, width, height);
  MM_CHECK(width > 0 && height > 0 && width <= 65535 && height <= 65535, item.png + ": size out of DICOM's range");
  DcmFileFormat source;
  check_dicom(source.loadFile(item.source.c_str(), EXS_Unknown, EGL_noChange, 256, ERM_autoDetect), item.source);
  DcmDataset& src = *source.getDataset();
  OFString source_class, source_uid;
  src.findAndGetOFString(DCM_SOPClassUID, source_class);
  src.findAndGetOFString(DCM_SOPInstanceUID, source_uid);

  DcmFileFormat out;
  DcmDataset& ds = *out.getDataset();
  const std::string uid = new_uid();
  put(ds, DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
  put(ds, DCM_SOPInstanceUID, uid);
  copy_patient_and_study(src, ds, /*with_study_uid=*/true);
  // Type 2 attributes of the patient, study, series and image modules: present, empty when unknown.
  for (const DcmTagKey& tag : {DCM_PatientName, DCM_PatientID, DCM_PatientBirthDate, DCM_PatientSex, DCM_StudyDate,
                               DCM_StudyTime, DCM_ReferringPhysicianName, DCM_StudyID, DCM_AccessionNumber,
                               DCM_PatientOrientation})
    if (!ds.tagExists(tag)) check_dicom(ds.insertEmptyElement(tag), "saliency capture");
  if (!ds.tagExists(DCM_StudyInstanceUID)) put(ds, DCM_StudyInstanceUID, new_uid());

  CaptureSeries& series = series_[item.series_uid];
  if (series.uid.empty()) series.uid = new_uid();
  // Laterality (type 2C): the source's body part is the capture's.
  OFString laterality;
  src.findAndGetOFString(DCM_Laterality, laterality);
  put(ds, DCM_Laterality, laterality.c_str());
  put(ds, DCM_Modality, "OT");
  put(ds, DCM_SeriesInstanceUID, series.uid);
  put(ds, DCM_SeriesNumber, "9901");
  put(ds, DCM_SeriesDescription, "MedMamba saliency - not for clinical use");
  put(ds, DCM_InstanceNumber, std::to_string(++series.instances));
  put(ds, DCM_Manufacturer, "medmamba-cpp mm-serve");
  put(ds, DCM_ConversionType, "WSD");
  char date[16], time_of_day[16];
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::strftime(date, sizeof date, "%Y%m%d", &utc);
  std::strftime(time_of_day, sizeof time_of_day, "%H%M%S", &utc);
  put(ds, DCM_ContentDate, date);
  put(ds, DCM_ContentTime, time_of_day);
  put(ds, DCM_ImageType, "DERIVED\\SECONDARY");
  put(ds, DCM_BurnedInAnnotation, "NO");
  put(ds, DCM_ImageComments, kNotForClinicalUse);
  put(ds, DCM_DerivationDescription,
      "Gradient x input saliency of the predicted class '" + item.class_name + "' (left: the model input; right: "
      "the positive evidence as a heat map), model " + model_name_ + ". Not for clinical use.");

  DcmItem* reference = nullptr;
  check_dicom(ds.findOrCreateSequenceItem(DCM_SourceImageSequence, reference, 0), "saliency capture: Source Image Sequence");
  put(*reference, DCM_ReferencedSOPClassUID, source_class.c_str());
  put(*reference, DCM_ReferencedSOPInstanceUID, source_uid.c_str());
  if (item.frame >= 0 && is_multiframe_sop_class(source_class.c_str())) put(*reference, DCM_ReferencedFrameNumber, std::to_string(item.frame + 1));
  put_pixels(ds, rgb, width, height);

  const std::string path = save_durably(out, out_);
  std::remove(item.png.c_str());
  return path;
}

}  // namespace mm::serve
