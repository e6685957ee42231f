// DICOM decoding against pydicom (test/fixtures/pixels/dicom.json), the
// lossless re-encodings of one CT slice, and the broken files of the shared data.
#ifdef MM_HAVE_IMAGING
#include <algorithm>
#include <map>
#include <set>

#include "imaging/dicom_reader.h"
#include "pixel_reference.h"
#include "test_util.h"

using namespace mm;
using mm::test::shared_data_path;

namespace {

// What pydicom and we decode as the same: modality values, MONOCHROME1 as stored.
DicomOptions as_stored() {
  DicomOptions o;
  o.invert_monochrome1 = false;
  return o;
}

// Files whose pydicom reference we do not require to match, and why.
const std::map<std::string, std::string> kReferenceExceptions = {
};

}  // namespace

TEST_CASE("dicom: decoded pixels equal pydicom's for the shared files") {
  const nlohmann::json refs = mm::test::load_pixel_references("dicom.json");
  int exact = 0, close = 0, no_image = 0, both_fail = 0, we_only = 0;
  for (const auto& [rel, ref] : refs.items()) {
    const std::string path = shared_data_path(rel);
    CAPTURE(rel);
    if (kReferenceExceptions.count(rel)) continue;
    if (ref.contains("expect")) {  // pydicom found no pixel data
      try {
        read_dicom(path, as_stored());
        FAIL_CHECK("decoded a file without pixel data");
      } catch (const ImageError& e) {
        CHECK_MESSAGE(e.kind == ImageError::Kind::NoImage, std::string(e.what()));
        ++no_image;
      }
      continue;
    }
    if (ref.contains("pydicom_error")) {  // no reference: we must fail cleanly or decode
      try {
        read_dicom(path, as_stored());
        ++we_only;
        MESSAGE("decoded where pydicom fails (" << ref["pydicom_error"].get<std::string>() << ")");
      } catch (const ImageError& e) {
        ++both_fail;
        MESSAGE("both fail; ours: " << std::string(e.what()));
      }
      continue;
    }
    std::vector<Image> images;
    try {
      images = read_dicom(path, as_stored());
    } catch (const std::exception& e) {
      FAIL_CHECK("pydicom decodes it (" << ref["decoder"].get<std::string>() << "); we fail: " << std::string(e.what()));
      continue;
    }
    const bool lossy = ref["lossy"].get<bool>();
    const auto cmp = mm::test::compare_with_reference(mm::test::stack_pixels(images), ref, lossy ? 0.01 : 0.0);
    INFO(ref["transfer_syntax"].get<std::string>() << " " << ref["photometric"].get<std::string>() << " via "
                                                    << ref["decoder"].get<std::string>() << ": " << cmp.detail);
    CHECK(cmp.close);
    exact += cmp.exact;
    close += cmp.close && !cmp.exact;
  }
  MESSAGE("dicom vs pydicom: " << exact << " identical, " << close << " within the lossy tolerance, " << no_image
                               << " without pixel data, " << both_fail << " failing in both, " << we_only
                               << " decoded only by us");
}

#endif  // MM_HAVE_IMAGING
