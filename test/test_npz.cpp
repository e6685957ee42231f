// .npy parsing and the MedMNIST .npz files of the shared data.
#include <cstring>
#include <string>

#include "data/npz.h"
#include "test_util.h"

using namespace mm;

namespace {

std::vector<uint8_t> npy(const std::string& header_dict, const std::vector<uint8_t>& data) {
  std::string h = header_dict;
  while ((10 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, uint8_t(h.size() & 0xFF), uint8_t(h.size() >> 8)};
  out.insert(out.end(), h.begin(), h.end());
  if (!data.empty()) out.insert(out.end(), data.begin(), data.end());  // (GCC warns on inserting an empty range)
  return out;
}

std::string medmnist_path(const std::string& name) { return std::string(MM_SOURCE_DIR) + "/../shared/data/medmnist/" + name; }
std::string fuzz_regression(const std::string& name) { return std::string(MM_SOURCE_DIR) + "/fuzz/regressions/fuzz_npz/" + name; }

}  // namespace

TEST_CASE("npy: header parsing, dtypes, bounds") {
  const auto a = npy("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }", {1, 2, 3, 4, 5, 6});
  const NpyArray u8 = parse_npy(a.data(), a.size(), "u8");
  CHECK(u8.shape == std::vector<int64_t>{2, 3});
  CHECK(u8.to_float() == std::vector<float>{1, 2, 3, 4, 5, 6});
  const float f[2] = {1.5f, -2.f};
  std::vector<uint8_t> fb(8);
  std::memcpy(fb.data(), f, 8);
  const auto b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", fb);
  CHECK(parse_npy(b.data(), b.size(), "f4").to_float() == std::vector<float>{1.5f, -2.f});
  const int64_t l[1] = {-7};
  std::vector<uint8_t> lb(8);
  std::memcpy(lb.data(), l, 8);
  const auto c = npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 1), }", lb);
  CHECK(parse_npy(c.data(), c.size(), "i8").to_int64() == std::vector<int64_t>{-7});
  // Refused: short data, Fortran order, big-endian, objects, a size over the cap, junk.
  const auto short_data = npy("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }", {1, 2});
  CHECK_THROWS_AS(parse_npy(short_data.data(), short_data.size(), "short"), ImageError);
  const auto fortran = npy("{'descr': '|u1', 'fortran_order': True, 'shape': (2,), }", {1, 2});
  CHECK_THROWS_AS(parse_npy(fortran.data(), fortran.size(), "fortran"), ImageError);
  const auto big = npy("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", {0, 0, 0, 0});
  CHECK_THROWS_AS(parse_npy(big.data(), big.size(), "big-endian"), ImageError);
  const auto obj = npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", {0});
  CHECK_THROWS_AS(parse_npy(obj.data(), obj.size(), "object"), ImageError);
  const auto huge = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 100000000000), }", {});
  try {
    parse_npy(huge.data(), huge.size(), "huge");
    FAIL("accepted a huge shape");
  } catch (const ImageError& e) {
    CHECK(e.kind == ImageError::Kind::TooLarge);
  }
  const uint8_t junk[] = "not an npy file at all";
  CHECK_THROWS_AS(parse_npy(junk, sizeof junk, "junk"), ImageError);
  for (size_t cut = 0; cut < a.size(); ++cut) CHECK_THROWS_AS(parse_npy(a.data(), cut, "cut"), ImageError);
}

TEST_CASE("npz: MedMNIST 2-D and 3-D splits of the shared data") {
  // PneumoniaMNIST: train 4708 (1214 normal / 3494 pneumonia), 28 x 28 grey (the data README).
  const MedmnistSplit train = read_medmnist(medmnist_path("pneumoniamnist.npz"), "train");
  CHECK(train.count == 4708);
  CHECK(train.item_shape == std::vector<int64_t>{28, 28});
  CHECK(!train.volumetric());
  int64_t ones = 0;
  for (int64_t i = 0; i < train.count; ++i) ones += train.label(i);
  CHECK(ones == 3494);
  const Image img = train.image(0);
  CHECK(img.height == 28);
  CHECK(img.channels == 1);
  CHECK(img.window_high == 255);
  CHECK(img.pixels[0] == float(train.images[0]));
  CHECK(read_medmnist(medmnist_path("pneumoniamnist.npz"), "test").count == 624);
  CHECK(read_medmnist(medmnist_path("breastmnist.npz"), "val").count == 78);
  // AdrenalMNIST3D: 28^3 volumes; an image is a slice along D (the middle by default).
  const MedmnistSplit vol = read_medmnist(medmnist_path("adrenalmnist3d.npz"), "val");
  CHECK(vol.count == 98);
  CHECK(vol.item_shape == std::vector<int64_t>{28, 28, 28});
  CHECK(vol.volumetric());
  const Image mid = vol.image(3);
  CHECK(mid.slice_index == 14);
  CHECK(mid.pixels[0] == float(vol.images[size_t(3 * 28 * 28 * 28 + 14 * 28 * 28)]));
  CHECK_THROWS_AS(vol.image(3, 28), ImageError);
  CHECK_THROWS_AS(read_medmnist(medmnist_path("breastmnist.npz"), "validation"), ImageError);
  NpzFile npz = NpzFile::open(medmnist_path("breastmnist.npz"));
  CHECK(npz.has("train_images"));
  CHECK_THROWS_AS(npz.array("nope"), ImageError);
}

TEST_CASE("npz: hostile MedMNIST files of fuzz/regressions/fuzz_npz give errors naming the reason") {
  // (2, 1, 0) labels: one column but no values, so label(0) threw std::out_of_range.
  CHECK_THROWS_WITH_AS(read_medmnist(fuzz_regression("labels-n-1-0-label-out-of-range.npz"), "train"),
                       doctest::Contains("labels must be (N) or (N, k) with k >= 1 columns"), ImageError);
}
