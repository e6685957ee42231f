// mm-predict's library (lib/predict) without the image readers: input
// discovery and shards, derived file names, record writers (read back by
// mm-eval's parser), aggregates, the .npy writer, saliency, and the pipeline
// with an in-memory reader (order, errors, bounded read-ahead, exit codes).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <tuple>

#include "core/error.h"
#include "data/npz.h"
#include "data/preprocess.h"
#include "eval/evaluate.h"
#include "eval/predictions_file.h"
#include "eval_test_util.h"
#include "io/npy_writer.h"
#include "model/model_file.h"
#include "tiny_model.h"
#include "predict/aggregate.h"
#include "predict/classifier.h"
#include "predict/inputs.h"
#include "predict/pipeline.h"
#include "predict/record_writer.h"
#include "predict/saliency.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::vector<std::string> paths_of(const std::vector<mm::InputFile>& files) {
  std::vector<std::string> out;
  for (const auto& f : files) out.push_back(f.path);
  return out;
}

// The tiny model of the mm-predict tests: 3 classes.
mm::LoadedModel tiny_model(uint64_t seed = 3) {
  return mm::test::tiny_model({"normal", "benign", "malignant"}, seed);
}

// A grey test picture whose content depends on seed.
mm::Image test_image(uint64_t seed, int64_t h = 40, int64_t w = 36) {
  mm::Image img;
  img.height = h;
  img.width = w;
  img.channels = 1;
  img.window_low = 0;
  img.window_high = 255;
  std::mt19937 rng{uint32_t(seed)};
  std::uniform_real_distribution<float> u(0, 255);
  img.pixels.resize(size_t(h * w));
  for (float& p : img.pixels) p = u(rng);
  return img;
}

mm::Prediction ok_record(const std::string& path, std::vector<double> probs) {
  mm::Prediction p;
  p.path = path;
  p.probabilities = std::move(probs);
  p.class_index = mm::argmax(p.probabilities);
  return p;
}

std::string write_records(mm::RecordFormat format, const mm::RecordLayout& layout,
                          const std::vector<mm::Prediction>& records) {
  std::ostringstream out;
  auto writer = mm::make_record_writer(format, layout, out);
  for (const auto& r : records) writer->write(r);
  writer->finish();
  return out.str();
}

}  // namespace

TEST_CASE("predict inputs: folders walked in sorted order, hidden files and Analyze data halves left out, lists") {
  mm::test::ScratchDir dir;
  const std::string root = dir.path();
  dir.write("b/2.dcm", "x");
  dir.write("b/10.dcm", "x");
  dir.write("a/z.png", "x");
  dir.write("a/.hidden.dcm", "x");
  dir.write(".git/config", "x");
  dir.write("pair/vol.hdr", "x");
  dir.write("pair/vol.img", "x");
  dir.write("pair/lonely.img", "x");  // no header beside it: listed (the reader reports it)
  fs::create_directory_symlink(root + "/a", root + "/b/loop-to-a");
  fs::create_directory_symlink(root, root + "/a/loop-to-root");  // a cycle: walked once
  fs::create_symlink(root + "/missing.dcm", root + "/b/broken-link.dcm");

  const mm::InputListing l = mm::find_inputs({root}, {});
  const std::vector<std::string> want = {root + "/a/z.png",          root + "/b/10.dcm",
                                         root + "/b/2.dcm",          root + "/b/broken-link.dcm",
                                         root + "/pair/lonely.img",  root + "/pair/vol.hdr"};
  CHECK(paths_of(l.files) == want);
  for (const auto& f : l.files) CHECK(f.found_in_folder == (f.path != root + "/b/broken-link.dcm"));
  CHECK(std::count_if(l.hidden_skipped.begin(), l.hidden_skipped.end(),
                      [](const std::string& h) { return h.find(".hidden.dcm") != std::string::npos; }) == 1);

  // A list file: comments, blank lines, paths relative to its folder, a folder, a
  // missing file (kept: reported when decoded), a file named twice.
  mm::test::ScratchDir other;
  other.write("b/2.dcm", "x");
  other.write("a/z.png", "x");
  const std::string list = other.write("lists/inputs.txt", "# inputs\n\n../b/2.dcm\n  ../a  \n../nope.dcm\r\n" +
                                                               other.path() + "/b/2.dcm\n");
  const mm::InputListing from_list = mm::find_inputs({other.path() + "/a/z.png"}, {list});
  CHECK(paths_of(from_list.files) == std::vector<std::string>{other.path() + "/a/z.png", other.path() + "/b/2.dcm",
                                                              other.path() + "/nope.dcm"});
  CHECK_FALSE(from_list.files[0].found_in_folder);  // named, and found in a listed folder
  CHECK_FALSE(from_list.files[1].found_in_folder);
  CHECK_THROWS_AS(mm::find_inputs({}, {root + "/no-such-list.txt"}), mm::Error);
}

TEST_CASE("predict shards: contiguous runs of the sorted inputs that cover every file once") {
  CHECK(mm::parse_shard("1/1").count == 1);
  CHECK(mm::parse_shard("3/8").index == 3);
  for (const char* bad : {"0/4", "5/4", "1/0", "2", "a/b", "1/2x", "-1/2", ""}) CHECK_THROWS_AS(mm::parse_shard(bad), mm::Error);
  for (int64_t n : {0, 1, 5, 7, 100}) {
    std::vector<mm::InputFile> files;
    for (int64_t i = 0; i < n; ++i) files.push_back({"f" + std::to_string(1000 + i), false});
    for (int64_t count : {1, 2, 3, 8}) {
      std::vector<mm::InputFile> joined;
      size_t smallest = SIZE_MAX, largest = 0;
      for (int64_t i = 1; i <= count; ++i) {
        const auto part = mm::select_shard(files, {i, count});
        joined.insert(joined.end(), part.begin(), part.end());
        smallest = std::min(smallest, part.size());
        largest = std::max(largest, part.size());
      }
      CHECK(paths_of(joined) == paths_of(files));
      CHECK(largest - smallest <= 1);
    }
  }
}

TEST_CASE("predict derived file names mirror the inputs under their common folder") {
  const std::vector<mm::InputFile> files = {{"/data/a/x.dcm", false}, {"/data/b/c/y.nii.gz", false}};
  CHECK(mm::common_folder(files) == "/data");
  CHECK(mm::common_folder({{"/data/a/x.dcm", false}}) == "/data/a");
  CHECK(mm::derived_file_name("/data", "/data/a/x.dcm", -1, -1, ".npy") == "a/x.dcm.npy");
  CHECK(mm::derived_file_name("/data", "/data/a/x.dcm", 3, -1, ".png") == "a/x.dcm.frame0003.png");
  CHECK(mm::derived_file_name("/data", "/data/b/c/y.nii.gz", -1, 42, ".npy") == "b/c/y.nii.gz.slice0042.npy");
  CHECK(mm::derived_file_name("/data", "/elsewhere/z.png", -1, -1, ".npy") == "elsewhere/z.png.npy");
}

TEST_CASE("predict records: CSV, JSON and JSONL layouts, read back by mm-eval's predictions parser") {
  mm::RecordLayout layout;
  layout.class_names = {"normal", "benign", "malignant, severe"};
  layout.top_k = 2;
  layout.logits = true;
  std::vector<mm::Prediction> records;
  records.push_back(ok_record("a,1.dcm", {0.2, 0.5, 0.3}));
  records.back().frame = 4;
  records.back().study_uid = "1.2";
  records.back().series_uid = "1.2.3";
  records.back().sop_uid = "1.2.3.4";
  records.back().logits = {0.1f, 1.0000001f, -2.5f};
  records.push_back(ok_record("b.nii.gz", {0.25, 0.25, 0.5}));
  records.back().slice = 7;
  records.back().logits = {0.f, 0.f, 0.693147182f};
  mm::Prediction broken;
  broken.path = "c.dcm";
  broken.status = mm::PredictionStatus::Failed;
  broken.error = "corrupt: truncated \"pixel\" data";
  records.push_back(broken);
  mm::Prediction sr = broken;
  sr.path = "d.dcm";
  sr.status = mm::PredictionStatus::NoImage;
  sr.error = "no image: no pixel data (Modality SR)";
  records.push_back(sr);

  mm::test::ScratchDir dir;
  SUBCASE("CSV") {
    const std::string csv = write_records(mm::RecordFormat::Csv, layout, records);
    std::istringstream lines(csv);
    std::string header, first, third;
    std::getline(lines, header);
    std::getline(lines, first);
    std::getline(lines, third);
    std::getline(lines, third);
    CHECK(header ==
          "path,frame,slice,study_uid,series_uid,sop_uid,status,label,class_index,probability,prob_normal,prob_benign,"
          "\"prob_malignant, severe\",top1_label,top1_probability,top2_label,top2_probability,logit_normal,"
          "logit_benign,\"logit_malignant, severe\",error");
    CHECK(first == "\"a,1.dcm\",4,,1.2,1.2.3,1.2.3.4,ok,benign,1,0.5,0.2,0.5,0.3,benign,0.5,\"malignant, severe\",0.3,"
                   "0.100000001,1.00000012,-2.5,");
    CHECK(third == "c.dcm,,,,,,failed,,,,,,,,,,,,,,\"corrupt: truncated \"\"pixel\"\" data\"");
    const mm::PredictionsFile back = mm::read_predictions(dir.write("p.csv", csv));
    CHECK(back.class_names == layout.class_names);
    REQUIRE(back.records.size() == 2);
    CHECK(back.records[1].probabilities == std::vector<double>{0.25, 0.25, 0.5});
    CHECK(back.failed == 2);

    layout.csv_header = false;
    const std::string rows = write_records(mm::RecordFormat::Csv, layout, records);
    CHECK(header + "\n" + rows == csv);  // shards append without a header
  }
  SUBCASE("JSON and JSONL") {
    const std::string jsonl = write_records(mm::RecordFormat::Jsonl, layout, records);
    std::istringstream lines(jsonl);
    std::vector<json> parsed;
    for (std::string line; std::getline(lines, line);) parsed.push_back(json::parse(line));
    REQUIRE(parsed.size() == 4);
    CHECK(parsed[0]["frame"] == 4);
    CHECK_FALSE(parsed[0].contains("slice"));
    CHECK(parsed[0]["label"] == "benign");
    CHECK(parsed[0]["probabilities"]["malignant, severe"] == 0.3);
    CHECK(parsed[0]["top_k"][1]["label"] == "malignant, severe");
    CHECK(parsed[0]["logits"]["benign"].get<float>() == 1.0000001f);  // %.9g reads back to the same float
    CHECK(parsed[1]["top_k"][0]["class_index"] == 2);
    CHECK(parsed[1]["top_k"][1]["class_index"] == 0);  // a tie keeps class order
    CHECK(parsed[2]["status"] == "failed");
    CHECK(parsed[2]["error"] == "corrupt: truncated \"pixel\" data");
    CHECK_FALSE(parsed[2].contains("probabilities"));
    CHECK(parsed[3]["status"] == "no_image");

    const std::string doc = write_records(mm::RecordFormat::Json, layout, records);
    const json j = json::parse(doc);
    CHECK(j["class_names"] == json(layout.class_names));
    CHECK(j["records"] == json(parsed));
    for (const auto& [name, text] : {std::pair<std::string, std::string>{"p.jsonl", jsonl}, {"p.json", doc}}) {
      const mm::PredictionsFile back = mm::read_predictions(dir.write(name, text));
      CHECK(back.class_names == layout.class_names);
      CHECK(back.records.size() == 2);
      CHECK(back.failed == 2);
    }
  }
  SUBCASE("bad layouts") {
    layout.class_names = {"a", "b", "a"};
    std::ostringstream out;
    CHECK_THROWS_AS(mm::make_record_writer(mm::RecordFormat::Csv, layout, out), mm::Error);
    CHECK_THROWS_AS(mm::record_format_from_name("xml"), mm::Error);
    CHECK(mm::record_format_for_output("out/p.jsonl") == mm::RecordFormat::Jsonl);
    CHECK(mm::record_format_for_output("p.ndjson") == mm::RecordFormat::Jsonl);
    CHECK(mm::record_format_for_output("p.json") == mm::RecordFormat::Json);
    CHECK(mm::record_format_for_output("") == mm::RecordFormat::Csv);
  }
}

TEST_CASE("predict aggregates: mean probabilities per series and study, in first-seen order") {
  CHECK_THROWS_AS(mm::parse_aggregate_levels("patient"), mm::Error);
  CHECK_THROWS_AS(mm::parse_aggregate_levels(""), mm::Error);
  const mm::AggregateLevels both = mm::parse_aggregate_levels("study,series");
  CHECK((both.series && both.study));
  mm::Aggregator agg(both);
  auto image = [](const char* study, const char* series, std::vector<double> p) {
    mm::Prediction r = ok_record("x.dcm", std::move(p));
    r.study_uid = study;
    r.series_uid = series;
    return r;
  };
  agg.add(image("9", "9.2", {0.8, 0.2}));
  agg.add(image("1", "1.1", {0.1, 0.9}));
  agg.add(image("9", "9.1", {0.4, 0.6}));
  agg.add(image("9", "9.2", {0.6, 0.4}));
  mm::Prediction failed;
  failed.status = mm::PredictionStatus::Failed;
  failed.study_uid = "9";
  failed.series_uid = "9.2";
  agg.add(failed);  // not counted
  agg.add(ok_record("picture.png", {0.5, 0.5}));  // no UIDs: not counted

  const std::vector<mm::Prediction> r = agg.records();
  REQUIRE(r.size() == 5);
  CHECK(r[0].path == "studies/9/series/9.2");
  CHECK(r[0].level == mm::PredictionLevel::Series);
  CHECK(r[0].images == 2);
  CHECK(r[0].probabilities[0] == doctest::Approx(0.7));
  CHECK(r[0].class_index == 0);
  CHECK(r[1].path == "studies/1/series/1.1");
  CHECK(r[2].path == "studies/9/series/9.1");
  CHECK(r[3].path == "studies/9");
  CHECK(r[3].level == mm::PredictionLevel::Study);
  CHECK(r[3].images == 3);
  CHECK(r[3].probabilities[1] == doctest::Approx((0.2 + 0.6 + 0.4) / 3));
  CHECK(r[3].class_index == 0);
  CHECK(r[4].path == "studies/1");
}

TEST_CASE("npy writer: NumPy's header layout, read back by our parser") {
  const std::vector<float> values = {1.5f, -2.f, 3.25f, 0.f, 1e-30f, 7.f};
  const std::vector<uint8_t> bytes = mm::encode_npy_f32(values.data(), {2, 3});
  CHECK(bytes.size() % 64 == values.size() * 4 % 64);  // the header is padded to 64 bytes
  CHECK(std::string(bytes.begin() + 10, bytes.begin() + 70).find("'shape': (2, 3), }") != std::string::npos);
  const mm::NpyArray a = mm::parse_npy(bytes.data(), bytes.size(), "test");
  CHECK(a.dtype == "<f4");
  CHECK(a.shape == std::vector<int64_t>{2, 3});
  CHECK(a.to_float() == values);
  const std::vector<uint8_t> one = mm::encode_npy_f32(values.data(), {6});
  CHECK(mm::parse_npy(one.data(), one.size(), "test").shape == std::vector<int64_t>{6});
}

TEST_CASE("saliency: gradient x input per image, independent of the batch; overlay picture") {
  mm::LoadedModel m = tiny_model();
  const int64_t s = 32, item = 3 * s * s;
  mm::Tensor batch = mm::Tensor::empty({2, 3, s, s});
  for (int64_t i = 0; i < 2; ++i) mm::preprocess_into(test_image(10 + i), m.meta.preprocess, batch.f32() + i * item);
  const mm::Tensor maps = mm::gradient_times_input(m.model, batch, {2, 0});
  REQUIRE(maps.shape() == mm::Shape{2, s, s});

  // The second image alone, explained for class 0: the same map.
  mm::Tensor second = mm::Tensor::empty({1, 3, s, s});
  std::copy(batch.f32() + item, batch.f32() + 2 * item, second.f32());
  const mm::Tensor alone = mm::gradient_times_input(m.model, second, {0});
  double worst = 0, largest = 0;
  for (int64_t p = 0; p < s * s; ++p) {
    worst = std::max(worst, std::fabs(double(alone.f32()[p]) - maps.f32()[s * s + p]));
    largest = std::max(largest, std::fabs(double(alone.f32()[p])));
  }
  CHECK(largest > 0);
  CHECK(worst <= 1e-4 * largest);

  // Summed over pixels, gradient x input is the first-order change of the logit
  // from a zero input: check it against the logit difference for a small scale.
  mm::Tensor scaled = second.clone(), scaled_more = second.clone();
  for (int64_t i = 0; i < item; ++i) scaled.f32()[i] *= 0.01f, scaled_more.f32()[i] *= 0.02f;
  const mm::Tensor small_maps = mm::gradient_times_input(m.model, scaled, {0});
  double total = 0;
  for (int64_t p = 0; p < s * s; ++p) total += small_maps.f32()[p];
  const double l1 = m.model.forward(scaled).f32()[0], l2 = m.model.forward(scaled_more).f32()[0];
  CHECK(total == doctest::Approx(l2 - l1).epsilon(0.05));  // d logit along x, for a step of 0.01 x

  const std::vector<uint8_t> rgb = mm::saliency_overlay_rgb(batch.f32(), maps.f32(), s, m.meta.preprocess);
  CHECK(rgb.size() == size_t(s * 2 * s * 3));
  // The left half is the input with normalisation undone, as grey.
  const float x0 = batch.f32()[0] * 0.5f + 0.5f;
  CHECK(std::abs(int(rgb[0]) - int(std::lround(std::clamp(x0, 0.f, 1.f) * 255))) <= 1);
  CHECK(rgb[0] == rgb[1]);
}

namespace {

// An in-memory "file system" for the pipeline: name -> what reading it gives.
struct FakeFiles {
  std::map<std::string, int> frames;  // path -> frames (0: no image; -1: corrupt; -2: not an image format)
  std::atomic<int64_t> started{0};
  std::vector<mm::Image> read(const std::string& path) {
    ++started;
    std::this_thread::sleep_for(std::chrono::microseconds(50 * (std::hash<std::string>()(path) % 7)));
    const int n = frames.at(path);
    if (n == 0) throw mm::ImageError(mm::ImageError::Kind::NoImage, path, "no pixel data (Modality SR)");
    if (n < 0) throw mm::ImageError(mm::ImageError::Kind::Corrupt, path, "truncated");
    std::vector<mm::Image> out;
    for (int f = 0; f < n; ++f) {
      out.push_back(test_image(std::hash<std::string>()(path) + size_t(f)));
      out.back().frame_index = n > 1 ? f : -1;
      out.back().series_uid = "1.2." + std::to_string(path.size());
    }
    return out;
  }
};

}  // namespace

TEST_CASE("predict pipeline: records in input order whatever the threads, equal to the model run image by image") {
  mm::LoadedModel m = tiny_model();
  FakeFiles fs_;
  std::vector<mm::InputFile> files;
  for (int i = 0; i < 40; ++i) {
    const std::string path = "f" + std::to_string(100 + i);
    fs_.frames[path] = i % 9 == 4 ? 0 : i % 11 == 5 ? -1 : 1 + i % 3;
    files.push_back({path, false});
  }
  const mm::ImagesReader reader = [&](const std::string& p, const mm::ReadHints&) { return fs_.read(p); };
  auto classifier = mm::make_classifier(m.model, {mm::DeviceChoice::Cpu, "fp32"});

  auto run = [&](int threads, int64_t batch, int64_t ahead, std::vector<mm::Prediction>& out) {
    mm::PredictOptions o;
    o.decode_threads = threads;
    o.batch_size = batch;
    o.images_ahead = ahead;
    o.logits = true;
    int64_t bound_violations = 0;
    fs_.started = 0;
    const mm::PredictSummary s = mm::run_predictions(files, reader, *classifier, m.meta, o, [&](const mm::Prediction& p) {
      out.push_back(p);
      // Files read ahead of the records written: the pool's bound plus one file
      // per thread, the file being batched and the batch itself.
      const int64_t held = ahead > 0 ? ahead : 4 * batch;  // the pipeline's default
      if (fs_.started - int64_t(out.size()) > held + threads + 2 + batch) ++bound_violations;
    });
    CHECK(bound_violations == 0);
    return s;
  };

  std::vector<mm::Prediction> serial, parallel;
  const mm::PredictSummary s1 = run(1, 1, 1, serial);
  const mm::PredictSummary s4 = run(4, 1, 2, parallel);
  REQUIRE(serial.size() == parallel.size());
  for (size_t i = 0; i < serial.size(); ++i) {
    CHECK(serial[i].path == parallel[i].path);
    CHECK(serial[i].frame == parallel[i].frame);
    CHECK(serial[i].logits == parallel[i].logits);  // batch 1: bit-identical
  }
  CHECK(s1.images == s4.images);
  CHECK(s1.failed_files == 4);    // files 5, 16, 27, 38
  CHECK(s1.no_image_files == 4);  // files 4, 13, 22, 31
  CHECK(mm::exit_code_of(s1) == mm::kExitSomeFailed);

  // Order: files sorted as given, frames ascending; one record per failed file.
  size_t r = 0;
  for (const auto& f : files) {
    const int n = fs_.frames[f.path];
    for (int k = 0; k < std::max(n, 1); ++k, ++r) {
      REQUIRE(r < serial.size());
      CHECK(serial[r].path == f.path);
      CHECK(serial[r].frame == (n > 1 ? k : -1));
      CHECK(serial[r].status == (n > 0 ? mm::PredictionStatus::Ok
                                       : n == 0 ? mm::PredictionStatus::NoImage : mm::PredictionStatus::Failed));
      if (n < 0) CHECK(serial[r].error == "corrupt: truncated");
    }
  }
  CHECK(r == serial.size());

  // Each image's logits equal the model run on that image alone.
  for (const auto& p : serial) {
    if (p.status != mm::PredictionStatus::Ok) continue;
    mm::Image img = test_image(std::hash<std::string>()(p.path) + size_t(std::max<int64_t>(p.frame, 0)));
    const mm::Tensor logits = m.model.forward(mm::preprocess(img, m.meta.preprocess).reshape({1, 3, 32, 32}));
    CHECK(std::vector<float>(logits.f32(), logits.f32() + 3) == p.logits);
    double sum = 0;
    for (double q : p.probabilities) sum += q;
    CHECK(sum == doctest::Approx(1.0));
  }

  // Larger batches: the same records, logits equal to float rounding.
  std::vector<mm::Prediction> batched;
  run(3, 5, 0, batched);
  REQUIRE(batched.size() == serial.size());
  for (size_t i = 0; i < serial.size(); ++i) {
    CHECK(batched[i].path == serial[i].path);
    for (size_t c = 0; c < serial[i].logits.size(); ++c)
      CHECK(batched[i].logits[c] == doctest::Approx(serial[i].logits[c]).epsilon(1e-4));
  }
}

TEST_CASE("predict pipeline: skipped folder files, exit codes") {
  mm::LoadedModel m = tiny_model();
  auto classifier = mm::make_classifier(m.model, {mm::DeviceChoice::Cpu, "fp32"});
  mm::test::ScratchDir dir;
  const std::string notes = dir.write("notes.txt", "not an image");
  std::vector<std::string> skipped;
  mm::PredictOptions o;
  o.skipped = [&](const std::string& p) { skipped.push_back(p); };
  const mm::ImagesReader never = [](const std::string& p, const mm::ReadHints&) -> std::vector<mm::Image> {
    throw mm::Error(p + ": should not be read");
  };
  std::vector<mm::Prediction> records;
  auto sink = [&](const mm::Prediction& p) { records.push_back(p); };

  // Found in a folder: quietly skipped. Named: a failure.
  mm::PredictSummary s = mm::run_predictions({{notes, true}}, never, *classifier, m.meta, o, sink);
  CHECK(skipped == std::vector<std::string>{notes});
  CHECK(records.empty());
  CHECK(s.skipped_files == 1);
  CHECK(mm::exit_code_of(s) == mm::kExitNothingClassified);
  s = mm::run_predictions({{notes, false}, {dir.path() + "/missing.dcm", false}}, never, *classifier, m.meta, o, sink);
  REQUIRE(records.size() == 2);
  CHECK(records[0].status == mm::PredictionStatus::Failed);
  CHECK(records[1].error == "cannot read: no such file");
  CHECK(mm::exit_code_of(s) == mm::kExitNothingClassified);

  mm::PredictSummary summary;
  summary.images = 3;
  CHECK(mm::exit_code_of(summary) == mm::kExitOk);
  summary.no_image_files = 2;  // SRs beside images: still a success
  CHECK(mm::exit_code_of(summary) == mm::kExitOk);
  summary.failed_files = 1;
  CHECK(mm::exit_code_of(summary) == mm::kExitSomeFailed);
  summary.images = 0;
  CHECK(mm::exit_code_of(summary) == mm::kExitNothingClassified);
  CHECK(mm::exit_code_of(mm::PredictSummary()) == mm::kExitNothingClassified);
}


TEST_CASE("predict pipeline: --draft asks the reader for the model's input size, and only then") {
  mm::LoadedModel m = tiny_model();
  auto classifier = mm::make_classifier(m.model, {mm::DeviceChoice::Cpu, "fp32"});
  std::vector<int64_t> asked;
  std::mutex mu;
  const mm::ImagesReader reader = [&](const std::string&, const mm::ReadHints& hints) {
    std::lock_guard<std::mutex> lock(mu);
    asked.push_back(hints.draft_side);
    return std::vector<mm::Image>{test_image(1)};
  };
  mm::PredictOptions o;
  o.decode_threads = 2;
  auto sink = [](const mm::Prediction& p) { CHECK(p.status == mm::PredictionStatus::Ok); };
  mm::run_predictions({{"a", false}, {"b", false}}, reader, *classifier, m.meta, o, sink);
  o.draft = true;
  mm::run_predictions({{"c", false}}, reader, *classifier, m.meta, o, sink);
  CHECK(asked == std::vector<int64_t>{0, 0, m.meta.preprocess.input_size});
}
TEST_CASE("predict classifier: device names; CUDA refused cleanly where there is none") {
  CHECK(mm::device_choice_from_name("auto") == mm::DeviceChoice::Auto);
  CHECK_THROWS_AS(mm::device_choice_from_name("tpu"), mm::Error);
  mm::LoadedModel m = tiny_model();
  CHECK_THROWS_AS(mm::make_classifier(m.model, {mm::DeviceChoice::Cpu, "fp16"}), mm::Error);
  if (!mm::cuda_available()) {
    CHECK_THROWS_AS(mm::make_classifier(m.model, {mm::DeviceChoice::Cuda, "fp32"}), mm::Error);
    // bf16 on the CPU: CpuBf16Model where the CPU has a bf16 path, float32 where not.
    CHECK(mm::make_classifier(m.model, {mm::DeviceChoice::Auto, "bf16"})->description().rfind("cpu", 0) == 0);
  }
}

TEST_CASE("predict pipeline: CPU and CUDA give the same records, inputs made on either (runs where a GPU is present)") {
  if (!mm::cuda_available()) {
    MESSAGE("skipped: no CUDA device");
    return;
  }
  // MedMamba-T at 224 px (the model people run) and the tiny test model.
  for (const bool full_size : {false, true}) {
    mm::LoadedModel m = tiny_model();
    if (full_size) {
      mm::ModelConfig cfg = mm::ModelConfig::variant("tiny", 4);
      m = mm::LoadedModel{mm::MedMamba(cfg), {}};
      m.model.init_reference(5);
      m.meta.config = cfg;
      m.meta.preprocess.input_size = 224;
    }
    FakeFiles fs_;
    std::vector<mm::InputFile> files;
    for (int i = 0; i < 14; ++i) {
      files.push_back({"g" + std::to_string(100 + i), false});
      fs_.frames[files.back().path] = i == 4 ? -1 : i == 9 ? 0 : 1 + i % 2;  // a corrupt file, one without image
    }
    const mm::ImagesReader reader = [&](const std::string& p, const mm::ReadHints&) { return fs_.read(p); };
    auto run = [&](mm::DeviceChoice device, const std::string& precision, bool preprocess_on_gpu = true) {
      auto classifier = mm::make_classifier(m.model, {device, precision});
      mm::PredictOptions o;
      o.batch_size = 5;
      o.decode_threads = 3;
      o.preprocess_on_gpu = preprocess_on_gpu;
      o.logits = true;
      std::vector<mm::Prediction> out;
      mm::run_predictions(files, reader, *classifier, m.meta, o, [&](const mm::Prediction& p) { out.push_back(p); });
      return out;
    };
    const std::vector<mm::Prediction> cpu = run(mm::DeviceChoice::Cpu, "fp32");
    // Largest probability difference allowed per precision (docs/benchmarks-gpu.md has the logits' errors).
    // fp32 twice: inputs made on the GPU (the default) and on the CPU.
    for (const auto& [precision, tolerance, on_gpu] : std::vector<std::tuple<std::string, double, bool>>{
             {"fp32", 1e-5, true}, {"fp32", 1e-5, false}, {"tf32", 2e-3, true}, {"fp16", 5e-3, true},
             {"bf16", 3e-2, true}}) {
      CAPTURE(on_gpu);
      const std::vector<mm::Prediction> gpu = run(mm::DeviceChoice::Cuda, precision, on_gpu);
      REQUIRE(gpu.size() == cpu.size());
      double worst = 0;
      int64_t disagreements = 0;
      for (size_t r = 0; r < cpu.size(); ++r) {
        CHECK(gpu[r].path == cpu[r].path);
        CHECK(gpu[r].frame == cpu[r].frame);
        CHECK(gpu[r].status == cpu[r].status);
        CHECK(gpu[r].error == cpu[r].error);
        for (size_t c = 0; c < cpu[r].probabilities.size(); ++c)
          worst = std::max(worst, std::fabs(gpu[r].probabilities[c] - cpu[r].probabilities[c]));
        disagreements += gpu[r].class_index != cpu[r].class_index;
      }
      const std::string model_name = full_size ? "MedMamba-T 224" : "tiny 32";
      MESSAGE(model_name << " " << precision << (on_gpu ? ", inputs made on the GPU" : ", inputs made on the CPU")
                         << ": largest probability difference " << worst << ", " << disagreements << " class changes");
      CHECK(worst <= tolerance);
      if (precision == "fp32") CHECK(disagreements == 0);
    }
  }
}

TEST_CASE("eval through the pipeline: every sample scored in order; an unreadable file stops it, named") {
  mm::LoadedModel m = tiny_model();
  mm::Dataset d;
  d.class_names = {"normal", "benign", "malignant"};
  for (int i = 0; i < 7; ++i) d.samples.push_back({"s" + std::to_string(i), "img/" + std::to_string(i) + ".png", i % 3});
  const mm::ImageFileReader read = [](const std::string& file, const mm::ReadHints&) {
    if (file == "img/missing.png") throw mm::ImageError(mm::ImageError::Kind::Io, file, "cannot open");
    return test_image(std::hash<std::string>()(file));
  };
  auto classifier = mm::make_classifier(m.model, {mm::DeviceChoice::Cpu, "fp32"});
  mm::ModelRunOptions o;
  o.batch_size = 3;
  o.decode_threads = 2;
  const mm::ScoredSamples s = mm::run_model_on_dataset(*classifier, m.meta, d, read, o);
  REQUIRE(s.labels.size() == 7);
  for (size_t i = 0; i < 7; ++i) {
    CHECK(s.labels[i] == int64_t(i % 3));
    // The model on that sample alone.
    const mm::Tensor logits = m.model.forward(
        mm::preprocess(read(d.samples[i].file, {}), m.meta.preprocess).reshape({1, 3, 32, 32}));
    std::vector<double> want(3);
    mm::softmax_into(logits.f32(), 3, want.data());
    for (size_t c = 0; c < 3; ++c) CHECK(s.probabilities[i * 3 + c] == doctest::Approx(want[c]).epsilon(1e-4));
  }
  // The reader's message names the file, not the sample's number in the pipeline.
  d.samples[4].file = "img/missing.png";
  CHECK_THROWS_WITH_AS(mm::run_model_on_dataset(*classifier, m.meta, d, read, o),
                       "img/missing.png: cannot read: cannot open", mm::Error);
}
