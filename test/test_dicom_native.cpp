// The fast input path (issue 14): uncompressed grey DICOM, and single-frame
// grey JPEG-LS and JPEG Lossless, read without DCMTK's dataset objects
// (imaging/dicom_native.h) gives the Images DCMTK's path gives, and a damaged
// file leaves it for the careful path; the vectorised grey resize of
// preprocess_into equals the Pillow-checked resize_pixels.
#ifdef MM_HAVE_IMAGING
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "data/preprocess.h"
#include "dicom_test_util.h"
#include "imaging/dicom_j2k.h"
#include "imaging/dicom_jpeg_lossless.h"
#include "imaging/dicom_jpegls_decoder.h"
#include "imaging/dicom_native.h"
#include "imaging/dicom_reader.h"
#include "imaging/image_reader.h"
#include "pixel_reference.h"
#include "test_util.h"

using namespace mm;
using mm::test::check_same_images;
using mm::test::read_outcome;
using mm::test::shared_data_path;

namespace {

const std::string kCt =
    "dicom/cornerstoneWADOImageLoader/testImages/CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm";

const std::string kCtDir = "dicom/cornerstoneWADOImageLoader/testImages/";
const std::string kCtJpegLs = kCtDir + "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm";
const std::string kCtJpegLsNear = kCtDir + "CTImage.dcm_JPEGLSLossyTransferSyntax_1.2.840.10008.1.2.4.81.dcm";
const std::string kCtJpegSv1 = kCtDir + "CTImage.dcm_JPEGProcess14SV1TransferSyntax_1.2.840.10008.1.2.4.70.dcm";
const std::string kCtJpeg14 = kCtDir + "CTImage.dcm_JPEGProcess14TransferSyntax_1.2.840.10008.1.2.4.57.dcm";

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Whether the reader decodes this file on the native path: the parse takes it
// and, when encapsulated, our decoder takes the frame (else DCMTK's path reads it).
bool decodes_natively(const std::optional<dicom::NativeFile>& native) {
  if (!native) return false;
  if (!native->encapsulated) return true;
  dicom::PixelLayout layout = native->layout;
  const std::string& syntax = native->transfer_syntax;
  try {
    if (syntax == "1.2.840.10008.1.2.4.80" || syntax == "1.2.840.10008.1.2.4.81")
      dicom::decode_own_jpegls_frames({native->pixels()}, layout, "file");
    else if (syntax == "1.2.840.10008.1.2.4.90" || syntax == "1.2.840.10008.1.2.4.91")
      dicom::decode_j2k_frames({native->pixels()}, layout, "file");
    else
      dicom::decode_jpeg_lossless_frames({native->pixels()}, layout, "file");
    return true;
  } catch (const ImageError&) {
    return false;
  }
}

// Each single-byte overwrite of good[from, to) is either refused by the native
// parse or read by the reader (native path) exactly as DCMTK's path reads it:
// the same Images, or the same kind of error. Never out of bounds (ASan builds
// check this). Returns how many were refused.
int check_damage(const std::vector<uint8_t>& good, size_t from, size_t to) {
  int refused = 0, same = 0, both_fail = 0;
  DicomOptions careful;
  careful.native_fast_path = false;
  for (size_t at = from; at < to; ++at) {
    std::vector<uint8_t> damaged = good;
    damaged[at] ^= 0xFF;
    if (!dicom::parse_native_file(damaged)) {
      ++refused;
      continue;
    }
    CAPTURE(at);
    std::vector<Image> a, b;
    const std::string got = read_outcome([&] { return read_dicom_bytes(damaged.data(), damaged.size(), "d.dcm"); }, a);
    const std::string want =
        read_outcome([&] { return read_dicom_bytes(damaged.data(), damaged.size(), "d.dcm", careful); }, b);
    REQUIRE(got == want);
    if (got == "ok") {
      check_same_images(a, b);
      ++same;
    } else {
      ++both_fail;
    }
  }
  MESSAGE(refused << " of " << to - from << " damaged bytes refused, " << same << " read as DCMTK reads them, "
                  << both_fail << " failing as on DCMTK's path");
  return refused;
}

// Where the pixel data's sequence delimiter is (the last one: a file may go on after it).
size_t delimiter(const std::vector<uint8_t>& file) {
  const uint8_t end[] = {0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0};
  const auto it = std::find_end(file.begin(), file.end(), std::begin(end), std::end(end));
  REQUIRE(it != file.end());
  return size_t(it - file.begin());
}

// The file with its encapsulated frame cut into fragments of the given sizes
// (the rest in a last one); lengths even, as PS3.5 A.4 wants.
std::vector<uint8_t> refragmented(const std::vector<uint8_t>& file, const std::vector<size_t>& sizes) {
  const auto native = dicom::parse_native_file(file);
  REQUIRE(native);
  REQUIRE(native->encapsulated);
  REQUIRE(native->joined.empty());
  const size_t item = native->pixel_offset - 8;  // the one fragment's item header
  std::vector<uint8_t> out(file.begin(), file.begin() + std::ptrdiff_t(item));
  auto add_item = [&](const uint8_t* data, size_t n) {
    const uint8_t header[8] = {0xFE, 0xFF, 0x00, 0xE0, uint8_t(n), uint8_t(n >> 8), uint8_t(n >> 16), uint8_t(n >> 24)};
    out.insert(out.end(), std::begin(header), std::end(header));
    out.insert(out.end(), data, data + n);
  };
  const uint8_t* stream = file.data() + native->pixel_offset;
  size_t done = 0;
  for (size_t n : sizes) {
    REQUIRE(n % 2 == 0);
    REQUIRE(done + n < native->pixel_length);
    add_item(stream + done, n);
    done += n;
  }
  add_item(stream + done, native->pixel_length - done);
  out.insert(out.end(), file.begin() + std::ptrdiff_t(native->pixel_offset + native->pixel_length), file.end());
  return out;
}

}  // namespace

TEST_CASE("dicom native path: the Images DCMTK's path gives, for every shared DICOM file and window mode") {
  const nlohmann::json refs = mm::test::load_pixel_references("dicom.json");
  int fast = 0, compressed = 0, files = 0;
  for (const auto& item : refs.items()) {
    const std::string path = shared_data_path(item.key());
    CAPTURE(item.key());
    ++files;
    const std::optional<dicom::NativeFile> native = dicom::read_native_file(path, uint64_t(1) << 30);
    if (decodes_natively(native)) ++fast, compressed += native->encapsulated;
    for (auto mode : {WindowOptions::Mode::Default, WindowOptions::Mode::FullRange, WindowOptions::Mode::MinMax}) {
      DicomOptions on, off;
      on.window.mode = off.window.mode = mode;
      off.native_fast_path = false;
      std::vector<Image> a, b;
      const std::string got = read_outcome([&] { return read_dicom(path, on); }, a),
                        want = read_outcome([&] { return read_dicom(path, off); }, b);
      REQUIRE(got == want);
      if (got == "ok") check_same_images(a, b);
    }
  }
  MESSAGE(fast << " of " << files << " files took the native path, " << compressed
                << " of them JPEG-LS, JPEG Lossless or JPEG 2000");
  CHECK(fast >= 30);
  CHECK(compressed >= 20);
}

TEST_CASE("dicom native path: damaged files are left to DCMTK's path, which reports them") {
  const std::vector<uint8_t> good = file_bytes(shared_data_path(kCt));
  REQUIRE(dicom::parse_native_file(good));
  const auto native = *dicom::parse_native_file(good);
  CHECK(native.layout.rows == 512);
  CHECK(native.layout.is_signed);
  CHECK(native.layout.intercept == -1024);
  REQUIRE(native.voi.windows.size() == 1);
  CHECK(native.voi.windows[0] == std::pair<double, double>(40, 400));

  // Pixel data cut short: not taken; DCMTK's path says it is corrupt.
  std::vector<uint8_t> cut(good.begin(), good.end() - 1000);
  CHECK_FALSE(dicom::parse_native_file(cut));
  CHECK_THROWS_AS(read_dicom_bytes(cut.data(), cut.size(), "cut.dcm"), ImageError);

  // Every single-byte overwrite of the header (lengths, VRs, values).
  CHECK(check_damage(good, 132, native.pixel_offset) > 0);

  // A Rows value the pixel data cannot hold: refused here, an error from DCMTK's path.
  std::vector<uint8_t> tall = good;
  const uint8_t rows_element[] = {0x28, 0x00, 0x10, 0x00, 'U', 'S', 2, 0};
  const auto it = std::search(tall.begin(), tall.end(), std::begin(rows_element), std::end(rows_element));
  REQUIRE(it != tall.end());
  it[8] = 0xFF, it[9] = 0x7F;
  CHECK_FALSE(dicom::parse_native_file(tall));
  try {
    read_dicom_bytes(tall.data(), tall.size(), "tall.dcm");
    FAIL_CHECK("decoded a file whose pixel data is too short");
  } catch (const ImageError& e) {
    CHECK(e.kind == ImageError::Kind::Corrupt);
  }
}

TEST_CASE("dicom native path: the CT slice in JPEG-LS and JPEG Lossless, one fragment or several, as DCMTK's path") {
  DicomOptions careful;
  careful.native_fast_path = false;
  const std::vector<Image> source = read_dicom(shared_data_path(kCt));
  for (const std::string& name : {kCtJpegLs, kCtJpegLsNear, kCtJpegSv1, kCtJpeg14}) {
    CAPTURE(name);
    const std::vector<uint8_t> file = file_bytes(shared_data_path(name));
    const auto native = dicom::parse_native_file(file);
    REQUIRE(native);
    CHECK(native->encapsulated);
    CHECK(native->layout.rows == 512);
    CHECK(native->layout.intercept == -1024);
    CHECK(native->pixel_length > 50000);
    CHECK(decodes_natively(native));
    const std::vector<Image> fast = read_dicom_bytes(file.data(), file.size(), name);
    check_same_images(fast, read_dicom_bytes(file.data(), file.size(), name, careful));
    if (name != kCtJpegLsNear) {  // lossless: the uncompressed slice's values
      REQUIRE(fast.size() == 1);
      CHECK(fast[0].pixels == source[0].pixels);
      CHECK(fast[0].window_low == source[0].window_low);
      CHECK(fast[0].window_high == source[0].window_high);
    }

    // The same stream in three fragments: joined as DCMTK's path joins them.
    const std::vector<uint8_t> split = refragmented(file, {1000, 40000});
    const auto split_native = dicom::parse_native_file(split);
    REQUIRE(split_native);
    const dicom::Codestream whole = native->pixels(), joined = split_native->pixels();
    REQUIRE(joined.size == whole.size);
    CHECK(std::memcmp(joined.data, whole.data, whole.size) == 0);
    const std::vector<Image> fast_split = read_dicom_bytes(split.data(), split.size(), name);
    check_same_images(fast_split, read_dicom_bytes(split.data(), split.size(), name, careful));
    check_same_images(fast_split, fast);
  }
}

TEST_CASE("dicom native path: damaged JPEG-LS and JPEG Lossless headers: refused, or read as DCMTK's path reads them") {
  // Whole headers of small files (every attribute, the offset table, the item headers) ...
  for (const std::string& path : {shared_data_path("dicom/pydicom/test_files/MR_small_jpeg_ls_lossless.dcm"),
                                  shared_data_path("dicom/pydicom/test_files/JPEGLSNearLossless_16.dcm"),
                                  std::string(MM_FIXTURE_DIR) + "/dicom/jpeg_lossless_restarts_grey-p5.dcm"}) {
    CAPTURE(path);
    const std::vector<uint8_t> good = file_bytes(path);
    const auto native = dicom::parse_native_file(good);
    REQUIRE(native);
    REQUIRE(decodes_natively(native));
    CHECK(check_damage(good, 132, native->pixel_offset) > 0);
    REQUIRE(delimiter(good) == native->pixel_offset + native->pixel_length);  // one fragment
    CHECK(check_damage(good, delimiter(good), delimiter(good) + 8) > 0);
  }
  // ... and of the CT slice the encapsulation: the pixel data element, the
  // offset table and the item headers of three fragments, the delimiter.
  for (const std::string& name : {kCtJpegLs, kCtJpegSv1}) {
    CAPTURE(name);
    const std::vector<uint8_t> good = refragmented(file_bytes(shared_data_path(name)), {1000, 40000});
    const auto native = dicom::parse_native_file(good);
    REQUIRE(native);
    const size_t first = native->pixel_offset;
    const uint8_t pixel_data[] = {0xE0, 0x7F, 0x10, 0x00, 'O', 'B'};
    const size_t element = size_t(std::search(good.begin(), good.end(), std::begin(pixel_data), std::end(pixel_data)) -
                                  good.begin());
    REQUIRE(element < first);
    CHECK(check_damage(good, element, first) > 0);
    CHECK(check_damage(good, first + 1000, first + 1008) > 0);
    CHECK(check_damage(good, first + 41008, first + 41016) > 0);
    CHECK(check_damage(good, delimiter(good), delimiter(good) + 8) > 0);
  }
  // Two frames: left to DCMTK's path, which decides which fragments make which frame.
  const std::string two_frames =
      "dicom/dicomParser/testImages/encapsulated/multi-frame/CT0012.not_fragmented_bot_jpeg_ls.80.dcm";
  CHECK_FALSE(dicom::parse_native_file(file_bytes(shared_data_path(two_frames))));
}

namespace {

// preprocess() against its reference steps: apply_window, resize_pixels (tested
// against Pillow), the channel conversion and normalisation, within 1e-6 on [0, 1].
void check_preprocess_against_reference(const Image& img, int64_t out_c) {
  for (const char* method : {"bilinear", "bicubic", "nearest", "bilinear-no-antialias"})
    for (int64_t size : {96, 224, 640}) {
      CAPTURE(method);
      CAPTURE(size);
      CAPTURE(out_c);
      Preprocess p;
      p.input_size = size;
      p.mean = out_c == 3 ? std::vector<float>{0.485f, 0.456f, 0.406f} : std::vector<float>{0.5f};
      p.std = out_c == 3 ? std::vector<float>{0.229f, 0.224f, 0.225f} : std::vector<float>{0.25f};
      p.interpolation = method;
      const Tensor got = preprocess(img, p);
      const Image sized = resize(apply_window(img), size, size, interpolation_from_name(method));
      Tensor want = Tensor::empty({out_c, size, size});
      for (int64_t c = 0; c < out_c; ++c)
        for (int64_t i = 0; i < size * size; ++i) {
          const float* px = &sized.pixels[size_t(i * img.channels)];
          const float v = img.channels == 1 ? px[0]
                          : out_c == 3     ? px[c]
                                           : 0.299f * px[0] + 0.587f * px[1] + 0.114f * px[2];
          want.f32()[c * size * size + i] = (v - p.mean[size_t(c)]) * (1.f / p.std[size_t(c)]);
        }
      mm::test::check_close(std::string(method), got, want, 0.f, 1e-6f / 0.224f);
    }
}

}  // namespace

TEST_CASE("preprocess: the vectorised resize equals resize_pixels (Pillow-checked) within 1e-6, grey and RGB") {
  const Image ct = read_dicom(shared_data_path(kCt)).at(0);
  REQUIRE(ct.channels == 1);
  check_preprocess_against_reference(ct, 3);
  check_preprocess_against_reference(ct, 1);
  const Image rgb = read_images(shared_data_path("brain-tumor-mri/Training/glioma/Tr-glTr_0000.jpg")).at(0);
  REQUIRE(rgb.channels == 3);
  check_preprocess_against_reference(rgb, 3);
  check_preprocess_against_reference(rgb, 1);
}

#endif  // MM_HAVE_IMAGING
