// The training input pipeline: image cache, batch loader, epoch order. The
// augmentation steps themselves are checked in test_train_augment.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "data/preprocess.h"
#include "train/batch_loader.h"
#include "train/image_cache.h"
#include "train/train_options.h"
#ifdef MM_HAVE_IMAGING
#include "imaging/image_reader.h"
#endif

using namespace mm;

namespace {

const std::string kPneumonia = std::string(MM_SOURCE_DIR) + "/../shared/data/medmnist/pneumoniamnist.npz";

DatasetOptions split(const std::string& name) {
  DatasetOptions o;
  o.split = name;
  return o;
}

Preprocess preprocess_for(int64_t size, int64_t channels) {
  Preprocess p;
  p.input_size = size;
  p.mean.assign(size_t(channels), 0.5f);
  p.std.assign(size_t(channels), 0.5f);
  if (channels == 3) p.mean = {0.485f, 0.456f, 0.406f}, p.std = {0.229f, 0.224f, 0.225f};
  return p;
}

std::vector<size_t> first_samples(size_t n) {
  std::vector<size_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

// A synthetic 2-D image in the given units and window.
Image synthetic(int64_t h, int64_t w, int64_t c, double lo, double hi, bool integers) {
  Image img;
  img.height = h, img.width = w, img.channels = c;
  img.window_low = lo, img.window_high = hi;
  img.source_path = "synthetic";
  for (int64_t i = 0; i < h * w * c; ++i) {
    const double t = 0.5 + 0.5 * std::sin(0.37 * double(i) + 0.011 * double(i % 97) * double(i % 13));
    const double v = lo + (hi - lo) * t;
    img.pixels.push_back(float(integers ? std::round(v) : v));
  }
  return img;
}

double max_abs_diff(const float* a, const float* b, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
  return worst;
}

}  // namespace

TEST_CASE("train data: the cache stores MedMNIST rows and records unreadable samples without throwing") {
  Dataset d = open_npz_dataset(kPneumonia, split("val"));
  d.samples.resize(12);
  for (const char* name : {"missing.png", "two-channel.png"}) {
    Sample s;
    s.id = name, s.file = name, s.label = 1;
    d.samples.push_back(s);
  }
  const ImageFileReader reader = [](const std::string& file, const ReadHints&) -> Image {
    if (file == "missing.png") throw ImageError(ImageError::Kind::Io, file, "cannot open");
    Image img = synthetic(10, 10, 1, 0, 255, true);
    img.channels = 2;  // preprocessing takes 1 or 3
    img.pixels.resize(200);
    return img;
  };
  std::vector<size_t> order = {13, 0, 5, 12, 7};
  int64_t last_done = -1, calls = 0;
  const ImageCache c =
      build_image_cache(d, order, preprocess_for(32, 3), 3, reader, 2, [&](int64_t done, int64_t total) {
        CHECK(total == 5);
        last_done = done, ++calls;
      });
  CHECK(last_done == 5);
  CHECK(calls >= 1);
  REQUIRE(c.rows() == 3);
  CHECK(c.images[0].sample == 0);
  CHECK(c.images[1].sample == 5);
  CHECK(c.images[2].sample == 7);
  CHECK(c.images[1].label == d.samples[5].label);
  REQUIRE(c.failures.size() == 2);
  CHECK(c.failures[0].id == "two-channel.png");
  CHECK(c.failures[0].reason.find("2 channels") != std::string::npos);
  CHECK(c.failures[1].id == "missing.png");
  CHECK(c.failures[1].reason.find("cannot open") != std::string::npos);
  CHECK(c.failed_fraction() == doctest::Approx(0.4));
  for (const CachedImage& row : c.images) {  // grey 8-bit MedMNIST: one uint8 channel at the model's size
    CHECK(row.channels == 1);
    CHECK_FALSE(row.wide);
    CHECK(row.u8.size() == 32 * 32);
  }
  CHECK(c.bytes() == 3 * 32 * 32);
  // The row is the window -> resize -> round(v * 255) of the image.
  const Image img = load_image(d, 5, {});
  const Image sized = resize(apply_window(img), 32, 32, Interpolation::Bilinear);
  int worst = 0;
  for (size_t i = 0; i < sized.pixels.size(); ++i)
    worst = std::max(worst, std::abs(int(c.images[1].u8[i]) - int(std::lround(sized.pixels[i] * 255.0))));
  CHECK(worst == 0);
}

TEST_CASE("train data: 8 or 16 bits by the window's levels") {
  CHECK_FALSE(needs_wide_storage(synthetic(4, 4, 1, 0, 255, true)));   // 8-bit picture, MedMNIST
  CHECK_FALSE(needs_wide_storage(synthetic(4, 4, 1, -40, 40, true)));  // CT brain window: 80 HU
  CHECK(needs_wide_storage(synthetic(4, 4, 1, -1024, 3071, true)));    // 12-bit CT, min-max
  CHECK(needs_wide_storage(synthetic(4, 4, 1, 0, 65535, true)));       // 16-bit PNG, full range
  CHECK(needs_wide_storage(synthetic(4, 4, 1, 0, 1, false)));          // float pixels (NIfTI)
  const CachedImage wide = cache_image(synthetic(20, 24, 1, 0, 4095, true), 16, 3, "bilinear");
  CHECK(wide.wide);
  CHECK(wide.u16.size() == 16 * 16);
  CHECK(wide.u8.empty());
  const CachedImage rgb_for_grey_model = cache_image(synthetic(20, 24, 3, 0, 255, true), 16, 1, "bilinear");
  CHECK(rgb_for_grey_model.channels == 1);
  CHECK(cache_image(synthetic(20, 24, 3, 0, 255, true), 16, 3, "bilinear").channels == 3);
}

TEST_CASE("train data: without augmentation a row gives mm::preprocess's input up to the 8/16-bit rounding") {
  struct Case {
    const char* what;
    Image img;
    int64_t size, channels;
    double step;  // the storage's rounding step in [0, 1] units
  };
  std::vector<Case> cases = {
      {"MedMNIST grey, 3-channel model, upscaled", load_image(open_npz_dataset(kPneumonia, split("test")), 3, {}), 64,
       3, 1 / 255.},
      {"12-bit grey, 1-channel model, downscaled", synthetic(50, 70, 1, -1024, 3071, true), 32, 1, 1 / 65535.},
      {"8-bit RGB, 3-channel model", synthetic(40, 30, 3, 0, 255, true), 32, 3, 1 / 255.},
      {"8-bit RGB, 1-channel model (luma)", synthetic(40, 30, 3, 0, 255, true), 32, 1, 1 / 255.},
      {"float RGB", synthetic(31, 33, 3, -2, 5, false), 32, 3, 1 / 65535.},
  };
  for (const Case& k : cases) {
    INFO(k.what);
    const Preprocess p = preprocess_for(k.size, k.channels);
    ImageCache c;
    c.size = k.size, c.out_channels = k.channels;
    c.images.push_back(cache_image(k.img, k.size, k.channels, p.interpolation));
    std::vector<float> got(size_t(k.channels * k.size * k.size));
    augment_into(c, 0, AugmentOptions::none(), p, 123, got.data());
    const Tensor want = preprocess(k.img, p);
    const double min_std = *std::min_element(p.std.begin(), p.std.end());
    const double err = max_abs_diff(got.data(), want.f32(), want.numel());
    CHECK(err <= 0.5 * k.step / min_std + 1e-6);
    CHECK(err > 0);  // the rounding is there: the comparison is not vacuous
  }
}

#ifdef MM_HAVE_IMAGING
TEST_CASE("train data: real files: a CT DICOM cached in 16 bits, a JPEG in 8, a truncated DICOM recorded") {
  const std::string root = std::string(MM_SOURCE_DIR) + "/../shared/data/";
  Dataset d;
  for (const char* file : {"dicom/pydicom/test_files/CT_small.dcm", "brain-tumor-mri/Testing/notumor/Te-no_0379.jpg",
                           "dicom/pydicom/test_files/MR_truncated.dcm"}) {
    Sample s;
    s.id = file, s.file = root + file, s.label = 0;
    d.samples.push_back(s);
  }
  const ImageFileReader reader = [](const std::string& file, const ReadHints&) { return read_images(file).at(0); };
  const Preprocess p = preprocess_for(64, 3);
  const ImageCache c = build_image_cache(d, {0, 1, 2}, p, 3, reader, 2);
  REQUIRE(c.rows() == 2);
  REQUIRE(c.failures.size() == 1);
  CHECK(c.failures[0].id == "dicom/pydicom/test_files/MR_truncated.dcm");
  CHECK_FALSE(c.failures[0].reason.empty());
  CHECK(c.images[0].wide);
  CHECK_FALSE(c.images[1].wide);
  for (int64_t row = 0; row < 2; ++row) {
    const Image img = reader(d.samples[size_t(row)].file, {});
    std::vector<float> got(size_t(3 * 64 * 64));
    augment_into(c, row, AugmentOptions::none(), p, 0, got.data());
    const Tensor want = preprocess(img, p);
    CHECK(max_abs_diff(got.data(), want.f32(), want.numel()) <=
          0.5 * (row == 0 ? 1 / 65535. : 1 / 255.) / 0.224 + 1e-6);
  }
}

TEST_CASE("train data: mm-train --draft caches the reduced decode the reader gives for the hint") {
  // A 512-px JPEG 2000 CT slice at 224 px: read at 256 px in draft mode (imaging/draft.h).
  const std::string ct = std::string(MM_SOURCE_DIR) + "/../shared/data/dicom/cornerstoneWADOImageLoader/testImages/CT1_J2KR";
  Dataset d;
  d.samples.push_back(Sample{ct, ct, 0});
  std::vector<int64_t> asked;
  const ImageFileReader reader = [&](const std::string& file, const ReadHints& hints) {
    asked.push_back(hints.draft_side);
    return read_images(file, {}, hints).at(0);
  };
  const Preprocess p = preprocess_for(224, 3);
  std::vector<float> full(size_t(3 * 224 * 224)), draft(full.size());
  augment_into(build_image_cache(d, {0}, p, 3, reader, 1), 0, AugmentOptions::none(), p, 0, full.data());
  augment_into(build_image_cache(d, {0}, p, 3, reader, 1, {}, ReadHints{224}), 0, AugmentOptions::none(), p, 0,
               draft.data());
  CHECK(asked == std::vector<int64_t>{0, 224});
  ReadOptions o;
  o.draft_side = 224;
  const Tensor want = preprocess(read_images(ct, o).at(0), p);
  CHECK(max_abs_diff(draft.data(), want.f32(), want.numel()) <= 0.5 / 65535. / 0.224 + 1e-6);
  CHECK(max_abs_diff(draft.data(), full.data(), want.numel()) > 1e-3);  // not the full decode
}
#endif

TEST_CASE("train options: --draft is part of a run's configuration (resumed runs keep it)") {
  TrainOptions o;
  o.draft = true;
  CHECK(TrainOptions::from_json(o.to_json()).draft);
  CHECK_FALSE(TrainOptions::from_json(TrainOptions().to_json()).draft);
}

TEST_CASE("train data: epoch_permutation is a seeded permutation that changes with the epoch") {
  const std::vector<int64_t> a = epoch_permutation(1000, 7, 0), b = epoch_permutation(1000, 7, 1);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) REQUIRE(sorted[size_t(i)] == i);
  CHECK(a == epoch_permutation(1000, 7, 0));
  CHECK(a != b);
  CHECK(a != epoch_permutation(1000, 8, 0));
  int64_t fixed_points = 0;
  for (int64_t i = 0; i < 1000; ++i) fixed_points += a[size_t(i)] == i;
  CHECK(fixed_points < 10);  // about 1 expected for a uniform shuffle
  CHECK(epoch_permutation(0, 1, 1).empty());
  CHECK(epoch_permutation(1, 1, 1) == std::vector<int64_t>{0});
}

namespace {

// Every batch of one epoch, copied.
std::vector<std::vector<float>> all_batches(BatchLoader& loader, const std::vector<int64_t>& rows, int64_t batch,
                                            uint64_t seed, int64_t epoch, std::vector<int64_t>* labels = nullptr) {
  loader.start_epoch(rows, batch, seed, epoch);
  std::vector<std::vector<float>> out;
  for (Batch b; loader.next(b);) {
    CHECK(b.index == int64_t(out.size()));
    CHECK(b.images.dim(0) == int64_t(b.labels.size()));
    out.emplace_back(b.images.f32(), b.images.f32() + b.images.numel());
    if (labels) labels->insert(labels->end(), b.labels.begin(), b.labels.end());
  }
  return out;
}

}  // namespace

TEST_CASE("train data: batches are bit-identical for 1, 2 and 4 threads, and an epoch resumes exactly") {
  const Dataset d = open_npz_dataset(kPneumonia, split("val"));
  const Preprocess p = preprocess_for(32, 3);
  const ImageCache c = build_image_cache(d, first_samples(37), p, 3, {}, 2);
  REQUIRE(c.rows() == 37);
  const std::vector<int64_t> rows = epoch_permutation(c.rows(), 11, 3);
  std::vector<std::vector<float>> reference;
  for (int threads : {1, 2, 4}) {
    INFO("threads " << threads);
    BatchLoader loader(c, AugmentOptions{}, p, threads);
    CHECK(loader.threads() == threads);
    std::vector<int64_t> labels;
    const auto batches = all_batches(loader, rows, 8, 11, 3, &labels);
    REQUIRE(batches.size() == 5);
    CHECK(batches.back().size() == size_t(5 * 3 * 32 * 32));  // the last partial batch is kept
    for (size_t i = 0; i < rows.size(); ++i) CHECK(labels[i] == c.images[size_t(rows[i])].label);
    if (reference.empty()) reference = batches;
    for (size_t b = 0; b < batches.size(); ++b)
      CHECK(std::memcmp(batches[b].data(), reference[b].data(), batches[b].size() * sizeof(float)) == 0);
  }
  BatchLoader loader(c, AugmentOptions{}, p, 2, 1);
  // Another epoch draws other augmentations.
  const auto other_epoch = all_batches(loader, rows, 8, 11, 4);
  CHECK(std::memcmp(other_epoch[0].data(), reference[0].data(), reference[0].size() * sizeof(float)) != 0);
  // Resuming after two batches: the rows from 16 on give the same images.
  const auto resumed = all_batches(loader, std::vector<int64_t>(rows.begin() + 16, rows.end()), 8, 11, 3);
  REQUIRE(resumed.size() == 3);
  for (size_t b = 0; b < 3; ++b)
    CHECK(std::memcmp(resumed[b].data(), reference[b + 2].data(), resumed[b].size() * sizeof(float)) == 0);
  // An epoch abandoned half-way, then restarted, gives the same first batch.
  loader.start_epoch(rows, 8, 11, 3);
  Batch b;
  REQUIRE(loader.next(b));
  const auto restarted = all_batches(loader, rows, 8, 11, 3);
  CHECK(std::memcmp(restarted[0].data(), reference[0].data(), reference[0].size() * sizeof(float)) == 0);
  CHECK_THROWS_AS(loader.start_epoch({0, 37}, 8, 1, 0), Error);
  CHECK_THROWS_AS(BatchLoader(c, AugmentOptions{}, preprocess_for(64, 3), 1), Error);
}
