// The DICOM cases the first reader left open (issue 10), against pydicom 3's
// pixels (test/fixtures/pixels/dicom_gaps.json, written by
// test/reference/dump_pixel_references.py dicom-gaps): VOI and Modality LUT
// Sequences, HTJ2K, deflated image frames, 1-bit RLE, the Toshiba JPEG 2000
// sign, YBR_PARTIAL_422, and the files DCMTK alone refuses.
#ifdef MM_HAVE_IMAGING
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmimage/diregist.h>  // colour support for DicomImage
#include <dcmtk/dcmimgle/dcmimage.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>

#include "fuzz_regression_checks.h"
#include "imaging/dicom_reader.h"
#include "pixel_reference.h"

using namespace mm;
using mm::test::compare_with_reference;
using mm::test::shared_data_path;
using mm::test::stack_pixels;

namespace {

const nlohmann::json& gaps() {
  static const nlohmann::json refs = mm::test::load_pixel_references("dicom_gaps.json");
  return refs;
}

// Modality values, MONOCHROME1 as stored, no VOI: what apply_modality_lut gives.
DicomOptions modality_values() {
  DicomOptions o;
  o.invert_monochrome1 = false;
  o.window.mode = WindowOptions::Mode::FullRange;
  return o;
}

// The file's own VOI (the default), MONOCHROME1 as stored: what apply_voi_lut gives.
DicomOptions file_voi() {
  DicomOptions o;
  o.invert_monochrome1 = false;
  return o;
}

void check_exact(const std::vector<Image>& images, const nlohmann::json& ref) {
  const auto cmp = compare_with_reference(stack_pixels(images), ref, 0.0);
  INFO(cmp.detail);
  CHECK(cmp.exact);
}

const std::string kData = "dicom/pydicom-data/data/";
const std::string kToshiba = "dicom/pylibjpeg-data/ds/JPEG2000Lossless/";

}  // namespace

TEST_CASE("dicom gaps: the VOI LUT Sequence and the Modality LUT Sequence equal pydicom's") {
  const std::string vlut = kData + "vlut_04.dcm";
  const auto& ref = gaps().at(vlut);
  check_exact(read_dicom(shared_data_path(vlut), modality_values()), ref.at("modality"));
  // By default the table is applied (apply_voi_lut, prefer_lut): its output,
  // 16 bits here, with the window over the output's whole range.
  const Image shown = read_dicom(shared_data_path(vlut), file_voi()).at(0);
  check_exact({shown}, ref.at("voi"));
  CHECK(shown.window_source == "file VOI LUT[0]");
  CHECK(shown.window_low == 0);
  CHECK(shown.window_high == std::ldexp(1.0, ref.at("voi_bits").get<int>()) - 1);
  DicomOptions second = file_voi();
  second.window.mode = WindowOptions::Mode::File;
  second.window.file_index = 1;  // the file has one table
  CHECK_THROWS_AS(read_dicom(shared_data_path(vlut), second), ImageError);
  // A 12-bit signed CT through a 4096-entry Modality LUT (first mapped -2048, stored as US).
  const std::string mlut = kData + "mlut_18.dcm";
  check_exact(read_dicom(shared_data_path(mlut), modality_values()), gaps().at(mlut).at("modality"));
}

TEST_CASE("dicom gaps: the SIGMOID and LINEAR_EXACT VOI LUT Functions equal pydicom's apply_windowing") {
  // Fixtures: CT_small.dcm's centre with windows 40/400 and -600/1500 (the script says why).
  const std::string dir = std::string(MM_FIXTURE_DIR) + "/dicom/";
  for (int window = 0; window < 2; ++window) {
    CAPTURE(window);
    DicomOptions o = file_voi();
    o.window.mode = WindowOptions::Mode::File;
    o.window.file_index = window;
    const std::string key = "window" + std::to_string(window);
    // SIGMOID replaces the pixels by its output over the full range, as pydicom does.
    const Image sigmoid = read_dicom(dir + "voi_sigmoid.dcm", o).at(0);
    CHECK(sigmoid.window_source == "file[" + std::to_string(window) + "] SIGMOID");
    const auto& want_sigmoid = gaps().at("fixture:voi_sigmoid.dcm").at(key);
    const auto cmp = compare_with_reference(sigmoid.pixels, want_sigmoid, 1e-6);
    INFO(cmp.detail);
    CHECK(cmp.close);
    // LINEAR_EXACT stays a window on modality values: mapped through it onto
    // pydicom's output range, the same values.
    const Image exact = read_dicom(dir + "voi_linear_exact.dcm", o).at(0);
    CHECK(exact.window_source == "file[" + std::to_string(window) + "] LINEAR_EXACT");
    const auto& want_exact = gaps().at("fixture:voi_linear_exact.dcm").at(key);
    const double y_min = sigmoid.window_low, y_max = sigmoid.window_high;  // the same full range
    std::vector<float> shown(exact.pixels.size());
    for (size_t i = 0; i < shown.size(); ++i) {
      const double t = (exact.pixels[i] - exact.window_low) / (exact.window_high - exact.window_low);
      shown[i] = float(std::clamp(t, 0.0, 1.0) * (y_max - y_min) + y_min);
    }
    const auto cmp_exact = compare_with_reference(shown, want_exact, 1e-6);
    INFO(cmp_exact.detail);
    CHECK(cmp_exact.close);
  }
}

TEST_CASE("dicom gaps: HTJ2K (lossless and lossy) through OpenJPEG equals pydicom's") {
  for (const char* name : {"HTJ2KLossless_08_RGB.dcm", "HTJ2K_08_RGB.dcm"}) {
    CAPTURE(name);
    check_exact(read_dicom(shared_data_path(kData + name)), gaps().at(kData + name).at("pixels"));
  }
}

TEST_CASE("dicom gaps: 1-bit images native, as deflated image frames and as RLE equal pydicom's") {
  // pydicom decodes neither the deflated image frame syntax nor 1-bit RLE; its
  // decoding of the same segmentation stored natively is the reference.
  for (const char* name : {"liver_deflate.dcm", "liver_rle.dcm", "liver_nonbyte_aligned_deflate.dcm",
                           "liver_nonbyte_aligned_rle.dcm"}) {
    CAPTURE(name);
    const auto& ref = gaps().at(kData + name);
    check_exact(read_dicom(shared_data_path(kData + name)), ref.at("pixels"));
    check_exact(read_dicom(shared_data_path(ref.at("pixels_from").get<std::string>())), ref.at("pixels"));
  }
}

TEST_CASE("dicom gaps: the Toshiba JPEG 2000 whose stream is signed and PixelRepresentation unsigned") {
  // pydicom 3 (OpenJPEG and GDCM plugins) and GDCM follow PixelRepresentation:
  // air at 63488, tissue below 0 wrapped to 65xxx; Pillow shifts by 2^15 (air
  // at 30720). We read the samples as signed, as the stream says: the same
  // bits as pydicom's, as two's complement, which is what the twin file with
  // PixelRepresentation 1 decodes to in every reader (docs/input-formats.md).
  const std::string unsigned_name = kToshiba + "TOSHIBA_J2K_SIZ1_PixRep0.dcm";
  const std::string signed_name = kToshiba + "TOSHIBA_J2K_SIZ0_PixRep1.dcm";
  const auto ours = read_dicom(shared_data_path(unsigned_name));
  check_exact(ours, gaps().at(unsigned_name).at("pylibjpeg_as_int16"));
  for (const char* reader : {"pylibjpeg", "gdcm", "pillow"}) {
    CAPTURE(reader);
    check_exact(read_dicom(shared_data_path(signed_name)), gaps().at(signed_name).at(reader));
  }
  CHECK(stack_pixels(ours) == stack_pixels(read_dicom(shared_data_path(signed_name))));
  // The file's window (350/2700) only makes sense for signed HU.
  CHECK(ours.at(0).window_source == "file[0]");
  CHECK(pixel_min_max(ours.at(0)).first == -2048);
}

TEST_CASE("dicom gaps: a 7-bit JPEG-LS stream (DCMTK's CharLS fork refuses it) through CharLS 2") {
  const std::string name = kData + "JLSL_08_07_0_1F.dcm";
  check_exact(read_dicom(shared_data_path(name)), gaps().at(name).at("pixels"));
}

TEST_CASE("dicom gaps: a dataset in another encoding than its file meta says is read as it is written") {
  // SC_rgb_jpeg.dcm: JPEG baseline (explicit VR) in the meta, an implicit VR dataset.
  const std::string name = "dicom/pydicom/test_files/SC_rgb_jpeg.dcm";
  const auto cmp = compare_with_reference(stack_pixels(read_dicom(shared_data_path(name))),
                                          gaps().at(name).at("pixels"), 0.01);  // lossy JPEG: decoders round apart
  INFO(cmp.detail);
  CHECK(cmp.close);
}

TEST_CASE("dicom gaps: YBR_PARTIAL_422 converts to RGB as DCMTK's renderer does") {
  // No file in the shared data has it: the fixture is SC_rgb.dcm turned into
  // native YBR_PARTIAL_422 by the reference script (PS3.3 C.7.6.3.1.2's forward transform).
  const std::string path = std::string(MM_FIXTURE_DIR) + "/dicom/ybr_partial_422.dcm";
  const Image ours = read_dicom(path).at(0);
  REQUIRE(ours.channels == 3);
  // DCMTK's dcmimage (DiYBRPart422Image), an implementation we did not write.
  DicomImage dcmtk(path.c_str());
  REQUIRE(dcmtk.getStatus() == EIS_Normal);
  const auto* rgb = static_cast<const uint8_t*>(dcmtk.getOutputData(8));
  REQUIRE(rgb != nullptr);
  REQUIRE(dcmtk.getOutputDataSize(8) == ours.pixels.size());
  float worst = 0;
  for (size_t i = 0; i < ours.pixels.size(); ++i) worst = std::max(worst, std::fabs(ours.pixels[i] - float(rgb[i])));
  CHECK(worst <= 1.f);  // DCMTK rounds its 4-digit coefficients differently
  // And back near the RGB it was made from (chroma averaged over pixel pairs, rounded twice).
  const auto cmp = compare_with_reference(ours.pixels, gaps().at("fixture:ybr_partial_422.dcm").at("source_rgb"), 0.01);
  INFO(cmp.detail);
  CHECK(cmp.close);
  // YBR_PARTIAL_420 exists only in video syntaxes: refused with the reason.
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string from = "YBR_PARTIAL_422";
  auto at = std::search(bytes.begin(), bytes.end(), from.begin(), from.end());
  REQUIRE(at != bytes.end());
  std::memcpy(&*at, "YBR_PARTIAL_420", from.size());
  try {
    read_dicom_bytes(bytes.data(), bytes.size(), "ybr_partial_420.dcm");
    FAIL("decoded YBR_PARTIAL_420");
  } catch (const ImageError& e) {
    CHECK(e.kind == ImageError::Kind::Unsupported);
    CHECK(std::string(e.what()).find("YBR_PARTIAL_420") != std::string::npos);
  }
}

TEST_CASE("dicom: the fuzz regressions give a clean error, each for its reason") {
  // fuzz/regressions/fuzz_dicom/<name>: inputs that once crashed, hung or ran out of memory.
  const std::map<std::string, std::string> expected = {
      // A meta element whose length the file cannot hold, read after the first parse
      // failed (retrying in the detected encoding): it was allocated (4 GiB). The
      // retry now scans the meta bytes itself (dicom_parse.cpp).
      {"oom-meta-group-length-after-failed-parse", "Invalid stream"},
      // The same through the UID's length (DCMTK computes a string's length from its value).
      {"oom-meta-uid-length-after-failed-parse", "Invalid stream"},
      // A damaged JPEG-LS scan that runs into the end of its fragment, with no EOI:
      // CharLS 2.4 took 7 s on its 434 bytes. The decoder now gets an EOI after it.
      {"timeout-jpegls-scan-without-eoi", "JPEG-LS frame 0: Invalid JPEG-LS stream"},
  };
  test::check_regressions_refused("fuzz_dicom", expected, [](const std::string& path) { read_dicom(path); });
}

#endif  // MM_HAVE_IMAGING
