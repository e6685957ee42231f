// The fast input path (issue 14): uncompressed grey DICOM read without DCMTK's
// dataset objects (imaging/dicom_native.h) gives the Images DCMTK's path gives,
// and a damaged file leaves it for the careful path; the vectorised grey resize
// of preprocess_into equals the Pillow-checked resize_pixels.
#ifdef MM_HAVE_IMAGING
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "data/preprocess.h"
#include "dicom_test_util.h"
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

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("dicom native path: the Images DCMTK's path gives, for every shared DICOM file and window mode") {
  const nlohmann::json refs = mm::test::load_pixel_references("dicom.json");
  int fast = 0, files = 0;
  for (const auto& item : refs.items()) {
    const std::string path = shared_data_path(item.key());
    CAPTURE(item.key());
    ++files;
    if (dicom::read_native_file(path, uint64_t(1) << 30)) ++fast;
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
  MESSAGE(fast << " of " << files << " files took the native path");
  CHECK(fast >= 30);
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

  // Every single-byte overwrite of the header (lengths, VRs, values) is either
  // refused or read as DCMTK's path reads it; never out of bounds (ASan builds
  // check this).
  const size_t header = native.pixel_offset;
  int refused = 0, same = 0, careful_fails = 0;
  DicomOptions careful;
  careful.native_fast_path = false;
  for (size_t at = 132; at < header; ++at) {
    std::vector<uint8_t> damaged = good;
    damaged[at] ^= 0xFF;
    if (!dicom::parse_native_file(damaged)) {
      ++refused;
      continue;
    }
    CAPTURE(at);
    const std::vector<Image> fast = read_dicom_bytes(damaged.data(), damaged.size(), "damaged.dcm");
    try {
      check_same_images(fast, read_dicom_bytes(damaged.data(), damaged.size(), "damaged.dcm", careful));
      ++same;
    } catch (const ImageError& e) {
      ++careful_fails;
      MESSAGE("byte " << at << ": the native path reads it, DCMTK's path says " << std::string(e.what()));
    }
  }
  MESSAGE(refused << " of " << header - 132 << " damaged headers refused, " << same << " read as DCMTK reads them, "
                  << careful_fails << " read where DCMTK's path fails");
  CHECK(refused > 0);
  CHECK(careful_fails == 0);

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
