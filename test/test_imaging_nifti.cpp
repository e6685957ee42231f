// NIfTI decoding against nibabel (test/fixtures/pixels/nifti.json), the 48
// stored orientations of one volume, and the slicing options.
#ifdef MM_HAVE_IMAGING
#include <cmath>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <map>
#include <set>
#include <fstream>

#include "imaging/nifti_header.h"
#include "imaging/nifti_orientation.h"
#include "imaging/nifti_reader.h"
#include "pixel_reference.h"
#include "test_util.h"

using namespace mm;
using mm::test::shared_data_path;

namespace {

// Files nibabel decodes that we do not, and why.
const std::map<std::string, std::string> kNiftiExceptions = {
    {"nifti/niivue/minimal.nii.gz", "qform = sform = 0: RAS per NIfTI-1 method 1; nibabel's affine says LAS (test below)"},
    {"nifti/niivue/tests/complex_image.nii.gz", "qform = sform = 0, as minimal.nii.gz"},
};

}  // namespace

TEST_CASE("nifti: canonical volumes equal nibabel's as_closest_canonical") {
  const nlohmann::json refs = mm::test::load_pixel_references("nifti.json");
  int exact = 0, close = 0, refused = 0;
  for (const auto& [rel, ref] : refs.items()) {
    CAPTURE(rel);
    const std::string path = shared_data_path(rel);
    if (kNiftiExceptions.count(rel)) {  // still an image or a clean error
      try {
        read_nifti(path);
      } catch (const ImageError&) {
      }
      continue;
    }
    if (!ref.contains("sha256")) {  // nibabel cannot (or we must not) read it: a clean error
      try {
        read_nifti_volume(path);
        FAIL_CHECK("decoded; nibabel: " << ref.dump());
      } catch (const ImageError& e) {
        ++refused;
      }
      continue;
    }
    NiftiVolume v;
    try {
      v = read_nifti_volume(path);
    } catch (const std::exception& e) {
      FAIL_CHECK("nibabel decodes it; we fail: " << std::string(e.what()));
      continue;
    }
    CHECK(v.stored_orientation == ref.at("ornt").get<std::string>());
    // nibabel scales in float64; ITK may round scl_slope * x + scl_inter in float.
    const auto cmp = mm::test::compare_with_reference(v.data, ref, 1e-6);
    INFO(ref.at("datatype").get<std::string>() << " " << ref.at("dims").dump() << ": " << cmp.detail);
    CHECK(cmp.close);
    exact += cmp.exact;
    close += cmp.close && !cmp.exact;
  }
  MESSAGE("nifti vs nibabel: " << exact << " identical, " << close << " within 1e-6 of the range, " << refused
                               << " refused as nibabel does");
}

TEST_CASE("nifti: qform = sform = 0 means RAS voxel axes (NIfTI-1 method 1)") {
  const NiftiVolume v = read_nifti_volume(shared_data_path("nifti/niivue/minimal.nii.gz"));
  CHECK(v.stored_orientation == "RAS");
  // nibabel's LAS reading of the same file is ours mirrored in x.
  const auto ref = mm::test::load_pixel_references("nifti.json").at("nifti/niivue/minimal.nii.gz");
  std::vector<float> mirrored(v.data.size());
  for (int64_t z = 0; z < v.nz; ++z)
    for (int64_t y = 0; y < v.ny; ++y)
      for (int64_t x = 0; x < v.nx; ++x)
        mirrored[size_t((z * v.ny + y) * v.nx + x)] = v.data[size_t((z * v.ny + y) * v.nx + (v.nx - 1 - x))];
  CHECK(mm::test::compare_with_reference(mirrored, ref, 0).exact);
}

TEST_CASE("nifti: the 48 stored orientations give the same slices") {
  const std::string dir = shared_data_path("nifti/niivue/tests/nifti_space");
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d))
      if (std::string(e->d_name).find(".nii") != std::string::npos) names.push_back(e->d_name);
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  REQUIRE(names.size() == 48);
  std::set<std::string> orientations;
  NiftiVolume first;
  std::vector<Image> first_slices[3];
  for (const std::string& name : names) {
    CAPTURE(name);
    const std::string path = dir + "/" + name;
    const NiftiVolume v = read_nifti_volume(path);
    orientations.insert(v.stored_orientation);
    CHECK(v.stored_orientation + ".nii.gz" == name);  // the file name says how it is stored
    for (int axis = 0; axis < 3; ++axis) {
      NiftiOptions o;
      o.axis = axis;
      o.slices = NiftiOptions::Slices::All;
      const std::vector<Image> slices = slice_nifti(v, o, path);
      if (first.data.empty()) {
        first_slices[axis] = slices;
        continue;
      }
      REQUIRE(slices.size() == first_slices[axis].size());
      for (size_t s = 0; s < slices.size(); ++s) CHECK(slices[s].pixels == first_slices[axis][s].pixels);
    }
    if (first.data.empty()) first = v;
    CHECK(v.data == first.data);
  }
  CHECK(orientations.size() == 48);
}

TEST_CASE("nifti: slicing options and 4-D volumes") {
  const std::string path = shared_data_path("nifti/nibabel/nibabel/tests/data/example4d.nii.gz");  // 128x96x24x2
  const NiftiVolume v0 = read_nifti_volume(path);
  CHECK(v0.volumes == 2);
  NiftiOptions o;
  const std::vector<Image> middle = read_nifti(path, o);  // default: the middle axial slice
  REQUIRE(middle.size() == 1);
  CHECK(middle[0].slice_axis == 2);
  CHECK(middle[0].slice_index == v0.nz / 2);
  CHECK(middle[0].height == v0.ny);
  CHECK(middle[0].width == v0.nx);
  CHECK(middle[0].volume_index == 0);
  CHECK(middle[0].window_source == "min-max (volume)");
  o.slices = NiftiOptions::Slices::All;
  CHECK(read_nifti(path, o).size() == size_t(v0.nz));
  o.slices = NiftiOptions::Slices::Range;
  o.first = 3, o.last = 7;
  const auto range = read_nifti(path, o);
  REQUIRE(range.size() == 4);
  CHECK(range[0].slice_index == 3);
  o.slices = NiftiOptions::Slices::Index;
  o.index = 5;
  o.axis = 0;  // sagittal: rows z (superior first), columns y
  const auto sag = read_nifti(path, o);
  REQUIRE(sag.size() == 1);
  CHECK(sag[0].height == v0.nz);
  CHECK(sag[0].width == v0.ny);
  CHECK(sag[0].at(0, 0) == v0.data[size_t(((v0.nz - 1) * v0.ny + 0) * v0.nx + 5)]);
  o.volume = 1;
  const NiftiVolume v1 = read_nifti_volume(path, o);
  CHECK(v1.data != v0.data);
  o.volume = 2;
  CHECK_THROWS_AS(read_nifti_volume(path, o), ImageError);
  o.volume = 0;
  o.index = 1000;
  CHECK_THROWS_AS(read_nifti(path, o), ImageError);
}

TEST_CASE("nifti: not NIfTI, truncated, or asking too much: ImageError") {
  CHECK_THROWS_AS(read_nifti(shared_data_path("nifti/NIFTI-Reader-JS/data/not-nifti.nii")), ImageError);
  NiftiOptions small;
  small.max_bytes = 1000;
  try {
    read_nifti(shared_data_path("nifti/niivue/FLAIR.nii.gz"), small);
    FAIL("over the limit");
  } catch (const ImageError& e) {
    CHECK(e.kind == ImageError::Kind::TooLarge);
  }
  // Truncations of an uncompressed .nii: header cut, data cut.
  const std::string src = shared_data_path("nifti/NIFTI-Reader-JS/data/avg152T1_LR_nifti.nii");
  std::ifstream in(src, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() > 100000);
  const std::string tmp = "/tmp/mm_test_truncated.nii";
  for (size_t cut : {size_t(100), size_t(348), size_t(352), size_t(360), bytes.size() / 2, bytes.size() - 1}) {
    CAPTURE(cut);
    std::ofstream(tmp, std::ios::binary).write(bytes.data(), std::streamsize(cut));
    CHECK_THROWS_AS(read_nifti(tmp), ImageError);
  }
  std::remove(tmp.c_str());
}

TEST_CASE("nifti: sheared, skewed, oblique and unusable affines orient as nibabel's as_closest_canonical") {
  // test/reference/make_nifti_affine_fixtures.py: where the header's first
  // source has no orientation, the reference is nibabel on the next source.
  const std::string dir = std::string(MM_FIXTURE_DIR) + "/nifti_affine/";
  std::ifstream in(dir + "expected.json");
  REQUIRE(in.good());
  const nlohmann::json refs = nlohmann::json::parse(in);
  REQUIRE(refs.size() == 12);
  for (const auto& [name, ref] : refs.items()) {
    CAPTURE(name);
    const NiftiVolume v = read_nifti_volume(dir + name);
    CHECK(v.stored_orientation == ref.at("ornt").get<std::string>());
    CHECK(v.orientation_source == ref.at("source").get<std::string>());
    const std::string warning = ref.at("warning");
    CAPTURE(v.warning);
    CHECK((warning.empty() ? v.warning.empty() : v.warning.find(warning) != std::string::npos));
    const auto cmp = mm::test::compare_with_reference(v.data, ref, 0);
    INFO(cmp.detail);
    CHECK(cmp.exact);
    CHECK(read_nifti(dir + name).at(0).warning == v.warning);  // what a caller can print
  }
}

TEST_CASE("nifti: the polar factor ends and is orthogonal on hostile 3x3 matrices") {
  const double big = 3.4e38, tiny = 1e-45, nan = std::nan("");
  const double cases[][3][3] = {{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}},
                                {{2, 0.4, 0}, {0, 2, 0.3}, {0.2, 0, 2}},
                                {{1, 1, 0}, {1, 1e-9, 0}, {0, 0, 1}},
                                {{1, 1, 1}, {1, 1, 1}, {1, 1, 1}},
                                {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}},
                                {{1, tiny, 0}, {tiny, 1, tiny}, {0, tiny, 1}},
                                {{nan, 0, 0}, {0, 1, 0}, {0, 0, 1}}};
  for (const auto& a : cases) {
    double r[3][3], s[3];
    polar_factor(a, r, s);  // must return; orthogonality only where a has full rank
    AxisMap m;
    const bool oriented = nearest_axis_permutation(a, m);
    if (!(std::isfinite(s[2]) && s[2] > 1e-6 * s[0])) continue;
    CHECK(oriented);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        const double dot = r[0][i] * r[0][j] + r[1][i] * r[1][j] + r[2][i] * r[2][j];
        CHECK(dot == doctest::Approx(i == j).epsilon(1e-12));
      }
  }
  AxisMap m;
  std::string why;
  const double huge_equal[3][3] = {{big, big, big}, {big, big, big}, {big, big, big}};
  CHECK_FALSE(nearest_axis_permutation(huge_equal, m, &why));
  CHECK(why == "linearly dependent columns");
  const double with_nan[3][3] = {{nan, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  CHECK_FALSE(nearest_axis_permutation(with_nan, m, &why));
  CHECK(why == "non-finite entries");
}

namespace {

// A committed fuzz seed with some header bytes overwritten, written to a temporary file.
struct PatchedNifti {
  std::string path = "/tmp/mm_test_patched_nifti.nii";
  std::vector<char> bytes;
  explicit PatchedNifti(const std::string& seed) {
    std::ifstream in(std::string(MM_SOURCE_DIR) + "/fuzz/seeds/nifti/" + seed, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    REQUIRE(bytes.size() > 352);
  }
  template <class T>
  PatchedNifti& set(size_t offset, T value) {
    std::memcpy(bytes.data() + offset, &value, sizeof value);  // little-endian seeds on a little-endian machine
    return *this;
  }
  std::string write() const {
    std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return path;
  }
  ~PatchedNifti() { std::remove(path.c_str()); }
};

ImageError::Kind error_kind(const std::string& path) {
  try {
    read_nifti(path);
  } catch (const ImageError& e) {
    return e.kind;
  }
  FAIL("read without an error");
  return ImageError::Kind::Io;
}

}  // namespace

TEST_CASE("nifti: hostile header fields give a typed error or an image with a warning") {
  using K = ImageError::Kind;
  const char* seed = "sheared_sform_oblique_qform.nii";  // NIfTI-1, 5x6x7 uint8, sform and qform set
  CHECK(error_kind(PatchedNifti(seed).set<float>(108, 1e30f).write()) == K::Corrupt);           // vox_offset
  CHECK(error_kind(PatchedNifti(seed).set<float>(108, std::nanf("")).write()) == K::Corrupt);
  CHECK(error_kind(PatchedNifti(seed).set<int16_t>(70, 1536).write()) == K::Unsupported);       // float128
  CHECK(error_kind(PatchedNifti(seed).set<int16_t>(42, 32767).set<int16_t>(44, 32767).set<int16_t>(46, 32767).write()) ==
        K::TooLarge);
  // FreeSurfer's dim[1] = -1 needs the length in glmin.
  CHECK(error_kind(PatchedNifti(seed).set<int16_t>(42, -1).set<int16_t>(44, 1).set<int16_t>(46, 1).set<int32_t>(140, 0).write()) ==
        K::Corrupt);
  CHECK(error_kind(PatchedNifti("nifti2.nii").set<int64_t>(24, int64_t(1) << 40).write()) == K::TooLarge);
  CHECK(error_kind(PatchedNifti(seed).set<int16_t>(42, 60).write()) == K::Corrupt);  // truncated
  {  // voxel sizes are not used: NaN and 1e38 change nothing
    const NiftiVolume plain = read_nifti_volume(PatchedNifti(seed).write());
    const NiftiVolume odd = read_nifti_volume(PatchedNifti(seed).set<float>(80, std::nanf("")).set<float>(84, 1e38f).write());
    CHECK(odd.warning.empty());
    CHECK(odd.data == plain.data);
  }
  {  // sform NaN, quaternion far out of range: no geometry left, voxel axes read as RAS
    const NiftiVolume v =
        read_nifti_volume(PatchedNifti(seed).set<float>(280, std::nanf("")).set<float>(256, 1e19f).write());
    CHECK(v.orientation_source == "none (NIfTI-1 method 1: RAS)");
    CHECK(v.stored_orientation == "RAS");
    CHECK(v.warning ==
          "orientation from none (NIfTI-1 method 1: RAS): sform unusable (non-finite entries); qform unusable "
          "(quaternion (b, c, d) longer than 1)");
  }
}

TEST_CASE("nifti: fuzz regressions give an image or an ImageError") {
  const std::string dir = std::string(MM_SOURCE_DIR) + "/fuzz/regressions/fuzz_nifti/";
  // ITK's vnl_svd (netlib ssvdc) never returned on this sform (every entry 3.4e38).
  const NiftiVolume v = read_nifti_volume(dir + "sform-float-max-ssvdc-never-returns.nii");
  CHECK(v.orientation_source == "qform");
  CHECK(v.warning == "orientation from qform: sform unusable (linearly dependent columns)");
  CHECK(v.stored_orientation == "RAS");
  CHECK(v.nx * v.ny * v.nz == 24);
}

#endif  // MM_HAVE_IMAGING
