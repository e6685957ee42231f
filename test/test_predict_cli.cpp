// mm-predict end to end: the built binary on real files of ../shared/data (linked
// into a scratch folder, never copied), with a tiny random model. Output schema
// in CSV/JSON/JSONL, exit codes, shards that reassemble into one run's output,
// --save-preprocessed, --saliency, aggregates, and mm-eval reading the output.
#include <doctest/doctest.h>

#ifdef MM_HAVE_IMAGING

#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/npz.h"
#include "data/preprocess.h"
#include "eval/predictions_file.h"
#include "eval_test_util.h"
#include "imaging/image_reader.h"
#include "io/csv.h"
#include "io/png_writer.h"
#include "model/model_file.h"
#include "tiny_model.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using mm::test::run_command;

namespace {

const std::string kBinary = std::string(MM_BINARY_DIR) + "/mm-predict";

std::string read_all(const std::string& path) { return mm::read_text_file(path); }

// A scratch study: good and broken DICOMs, an SR, a NIfTI volume, a JPEG and a
// PNG, a text file and a hidden file; a tiny model beside it.
struct Fixture {
  mm::test::ScratchDir dir;
  std::string data, root, model, common;
  mm::ModelMeta meta;

  Fixture() {
    data = mm::test::shared_data_dir();
    if (data.empty()) return;
    root = dir.path() + "/inputs";
    const std::string pyd = data + "/dicom/pydicom/test_files/";
    link(pyd + "CT_small.dcm", "study/ct.dcm");
    link(pyd + "MR_small.dcm", "study/mr.dcm");
    link(pyd + "SC_rgb_rle_2frame.dcm", "study/us_2frames.dcm");
    link(pyd + "MR_truncated.dcm", "study/truncated.dcm");
    link(data + "/dicom/pydicom-data/data/emri_small_jpeg_2k_lossless_too_short.dcm", "study/too_short.dcm");
    link(data + "/dicom/cornerstoneWADOImageLoader/testImages/no-pixel-data.dcm", "study/report_sr.dcm");
    link(data + "/nifti/nibabel/nibabel/tests/data/standard.nii.gz", "volume/standard.nii.gz");
    link(data + "/brain-tumor-mri/Testing/glioma/Te-glTr_0000.jpg", "pictures/glioma.jpg");
    dir.write("inputs/study/notes.txt", "not an image");
    dir.write("inputs/study/.hidden.dcm", "hidden");
    std::vector<uint8_t> png(48 * 40);
    for (size_t i = 0; i < png.size(); ++i) png[i] = uint8_t(i * 7 % 251);
    mm::write_png(root + "/pictures/gradient.png", png.data(), 48, 40, 1);

    mm::LoadedModel tiny = mm::test::tiny_model({"normal", "benign", "malignant"}, 11);
    meta = tiny.meta;
    model = dir.path() + "/tiny.safetensors";
    mm::save_model(model, tiny.model, meta);
  }

  void link(const std::string& target, const std::string& rel) {
    const fs::path p = fs::path(root) / rel;
    fs::create_directories(p.parent_path());
    fs::create_symlink(target, p);
  }

  std::string predict(const std::string& args) const { return kBinary + " --model " + model + " " + args; }
  std::string out(const std::string& name) const { return dir.path() + "/" + name; }
};

mm::CsvTable csv_of(const std::string& path) { return mm::read_csv_file(path); }

std::string field(const mm::CsvTable& t, size_t row, const std::string& name) {
  const int c = t.column(name);
  REQUIRE_MESSAGE(c >= 0, "no column " << name);
  return t.rows[row][size_t(c)];
}

std::vector<json> jsonl_of(const std::string& path) {
  std::istringstream lines(read_all(path));
  std::vector<json> out;
  for (std::string line; std::getline(lines, line);) out.push_back(json::parse(line));
  return out;
}

}  // namespace

TEST_CASE("mm-predict on a folder of real files: records, order, statuses, stderr, CSV/JSON/JSONL agree") {
  Fixture f;
  if (f.data.empty()) return;
  REQUIRE_MESSAGE(fs::exists(kBinary), "build the mm-predict target: " << kBinary);
  const std::string csv = f.out("all.csv");
  CHECK(run_command(f.predict("--batch-size 4 --threads 3 " + f.root + " -o " + csv + " 2> " + f.out("err.txt"))) ==
        3);  // two broken DICOMs

  const mm::CsvTable t = csv_of(csv);
  CHECK(t.header == std::vector<std::string>{"path", "frame", "slice", "study_uid", "series_uid", "sop_uid", "status",
                                             "label", "class_index", "probability", "prob_normal", "prob_benign",
                                             "prob_malignant", "error"});
  // Sorted paths; frames and slices in order; no record for notes.txt or the hidden file.
  std::vector<std::pair<std::string, std::string>> rows;  // path (relative), status
  for (size_t r = 0; r < t.rows.size(); ++r)
    rows.emplace_back(field(t, r, "path").substr(f.root.size() + 1), field(t, r, "status"));
  std::vector<std::pair<std::string, std::string>> want = {
      {"pictures/glioma.jpg", "ok"},     {"pictures/gradient.png", "ok"},  {"study/ct.dcm", "ok"},
      {"study/mr.dcm", "ok"},            {"study/report_sr.dcm", "no_image"}, {"study/too_short.dcm", "failed"},
      {"study/truncated.dcm", "failed"}, {"study/us_2frames.dcm", "ok"},  {"study/us_2frames.dcm", "ok"}};
  for (int s = 0; s < 7; ++s) want.emplace_back("volume/standard.nii.gz", "ok");
  CHECK(rows == want);
  CHECK(field(t, 2, "study_uid") == "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322");
  CHECK(field(t, 2, "sop_uid") == "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322");
  CHECK(field(t, 2, "frame").empty());  // one frame
  CHECK(field(t, 7, "frame") == "0");
  CHECK(field(t, 8, "frame") == "1");
  CHECK(field(t, 9, "slice") == "0");
  CHECK(field(t, 15, "slice") == "6");
  CHECK(field(t, 6, "error").rfind("corrupt: ", 0) == 0);
  CHECK(field(t, 4, "error").rfind("no image: ", 0) == 0);
  CHECK(field(t, 4, "label").empty());
  for (size_t r : {0, 2, 9}) {
    const int c = std::stoi(field(t, r, "class_index"));
    CHECK(field(t, r, "label") == f.meta.class_names[size_t(c)]);
    CHECK(field(t, r, "probability") == field(t, r, "prob_" + f.meta.class_names[size_t(c)]));
  }
  // Failures on stderr, with path and reason; SRs only with -v.
  const std::string err = read_all(f.out("err.txt"));
  CHECK(err.find(f.root + "/study/truncated.dcm: corrupt: ") != std::string::npos);
  CHECK(err.find(f.root + "/study/too_short.dcm: ") != std::string::npos);
  CHECK(err.find("report_sr.dcm") == std::string::npos);
  CHECK(err.find("13 images classified from 10 files (2 failed, 1 without an image, 1 skipped)") != std::string::npos);

  // The same run as JSONL and JSON: the same records, the same numbers.
  CHECK(run_command(f.predict("--batch-size 4 --threads 3 -q " + f.root + " -o " + f.out("all.jsonl") +
                              " 2> /dev/null")) == 3);
  // The same thread count: the GEMM library may split its work (and round) differently with
  // another (oneDNN's AVX2 sgemm does); results are deterministic for a given thread count.
  CHECK(run_command(f.predict("--batch-size 4 --threads 3 -q --format json " + f.root + " > " + f.out("all.json") +
                              " 2> /dev/null")) == 3);
  const std::vector<json> lines = jsonl_of(f.out("all.jsonl"));
  const json doc = json::parse(read_all(f.out("all.json")));
  CHECK(doc["class_names"] == json(f.meta.class_names));
  CHECK(doc["records"] == json(lines));
  REQUIRE(lines.size() == t.rows.size());
  for (size_t r = 0; r < lines.size(); ++r) {
    CHECK(lines[r]["path"] == field(t, r, "path"));
    CHECK(lines[r]["status"] == field(t, r, "status"));
    if (lines[r]["status"] != "ok") continue;
    CHECK(lines[r]["label"] == field(t, r, "label"));
    for (const std::string& c : f.meta.class_names)
      CHECK(lines[r]["probabilities"][c].get<double>() == std::stod(field(t, r, "prob_" + c)));
  }
  // mm-eval reads all three.
  for (const std::string& name : {"all.csv", "all.jsonl", "all.json"}) {
    const mm::PredictionsFile p = mm::read_predictions(f.out(name));
    CHECK(p.records.size() == 13);
    CHECK(p.failed == 3);
    CHECK(p.class_names == f.meta.class_names);
  }
}

TEST_CASE("mm-predict exit codes: 0 all classified, 3 some failed, 4 none classified, 2 usage, 1 fatal") {
  Fixture f;
  if (f.data.empty()) return;
  const std::string s = f.root + "/study/", quiet = " -q > /dev/null 2>&1";
  CHECK(run_command(f.predict(s + "ct.dcm " + f.root + "/pictures" + quiet)) == 0);
  CHECK(run_command(f.predict(s + "ct.dcm " + s + "report_sr.dcm" + quiet)) == 0);  // an SR is no failure
  CHECK(run_command(f.predict(s + "ct.dcm " + s + "truncated.dcm" + quiet)) == 3);
  CHECK(run_command(f.predict(s + "truncated.dcm " + s + "too_short.dcm" + quiet)) == 4);
  CHECK(run_command(f.predict(s + "report_sr.dcm" + quiet)) == 4);  // nothing to classify
  CHECK(run_command(f.predict(s + "notes.txt" + quiet)) == 4);       // named: not an image format, a failure
  CHECK(run_command(f.predict(f.root + "/no-such-file.dcm" + quiet)) == 4);
  CHECK(run_command(f.predict("" + quiet)) == 2);  // no inputs
  CHECK(run_command(kBinary + " " + s + "ct.dcm" + quiet) == 0);  // no --model: the shipped default model
  CHECK(run_command(f.predict("--shard 0/2 " + s + quiet)) == 2);
  CHECK(run_command(f.predict("--format xml " + s + quiet)) == 2);
  CHECK(run_command(f.predict("--aggregate patient " + s + quiet)) == 2);
  CHECK(run_command(f.predict("--batch-size 0 " + s + quiet)) == 2);
  CHECK(run_command(f.predict("--no-such-option " + s + quiet)) == 2);
  CHECK(run_command(kBinary + " --model " + f.out("missing.safetensors") + " " + s + quiet) == 1);
  CHECK(run_command(f.predict("-o " + f.out("no/such/folder/out.csv") + " " + s + quiet)) == 1);
  if (!mm::cuda_available()) CHECK(run_command(f.predict("--device cuda " + s + "ct.dcm" + quiet)) == 1);
  CHECK(run_command(kBinary + " --help > /dev/null") == 0);
}

TEST_CASE("mm-predict --shard i/N: the shards' outputs concatenated equal one run's") {
  Fixture f;
  if (f.data.empty()) return;
  // A list file (one of the ways a job array gets its inputs), relative to its folder.
  const std::string list = f.dir.write("inputs/list.txt", "study\nvolume/standard.nii.gz\npictures/glioma.jpg\n");
  const std::string common = "-q --threads 2 --list " + list + " ";
  // Batch 1: each image's logits do not depend on its neighbours, so the text is
  // identical. (With larger batches, shard boundaries change which images share a
  // batch, and the CPU's numbers move in the last float digits.)
  for (const std::string& format : {"csv", "jsonl"}) {
    const std::string single = f.out("single." + format);
    CHECK(run_command(f.predict(common + "--batch-size 1 --logits -o " + single + " 2>/dev/null")) == 3);
    std::string joined;
    for (int i = 1; i <= 3; ++i) {
      const std::string part = f.out("part" + std::to_string(i) + "." + format);
      const std::string header = i > 1 ? "--no-header " : "";
      const int rc = run_command(f.predict(common + "--batch-size 1 --logits " + header + "--shard " +
                                           std::to_string(i) + "/3 -o " + part + " 2>/dev/null"));
      CHECK((rc == 0 || rc == 3 || rc == 4));  // a shard may hold only failures
      joined += read_all(part);
    }
    CHECK(joined == read_all(single));
  }
  // Batch 4: the same records; probabilities equal to float rounding.
  const std::string single = f.out("single4.csv");
  CHECK(run_command(f.predict(common + "--batch-size 4 -o " + single + " 2>/dev/null")) == 3);
  std::string joined;
  for (int i = 1; i <= 2; ++i) {
    const std::string part = f.out("part4-" + std::to_string(i) + ".csv");
    run_command(f.predict(common + "--batch-size 4 --shard " + std::to_string(i) + "/2 " +
                          (i > 1 ? "--no-header " : "") + "-o " + part + " 2>/dev/null"));
    joined += read_all(part);
  }
  const mm::CsvTable a = csv_of(single), b = mm::parse_csv(joined, "joined");
  REQUIRE(a.rows.size() == b.rows.size());
  for (size_t r = 0; r < a.rows.size(); ++r) {
    CHECK(field(a, r, "path") == field(b, r, "path"));
    CHECK(field(a, r, "status") == field(b, r, "status"));
    for (const std::string& c : f.meta.class_names)
      if (!field(a, r, "prob_" + c).empty())
        CHECK(std::stod(field(a, r, "prob_" + c)) == doctest::Approx(std::stod(field(b, r, "prob_" + c))).epsilon(1e-5));
  }
}

TEST_CASE("mm-predict --save-preprocessed, --saliency, --aggregate, --topk, --logits") {
  Fixture f;
  if (f.data.empty()) return;
  const std::string npy = f.out("npy"), sal = f.out("saliency"), out = f.out("agg.jsonl");
  CHECK(run_command(f.predict("-q --save-preprocessed " + npy + " --saliency " + sal +
                              " --aggregate series,study --topk 2 --logits " + f.root + "/study " + f.root +
                              "/volume -o " + out + " 2>/dev/null")) == 3);
  // Names mirror the inputs under their common folder (the inputs folder here).
  for (const char* name : {"study/ct.dcm", "study/us_2frames.dcm.frame0000", "study/us_2frames.dcm.frame0001",
                           "volume/standard.nii.gz.slice0003"}) {
    CHECK_MESSAGE(fs::exists(npy + "/" + name + ".npy"), name);
    CHECK_MESSAGE(fs::exists(sal + "/" + name + ".png"), name);
  }
  CHECK_FALSE(fs::exists(npy + "/study/truncated.dcm.npy"));
  // The saved input is what preprocessing makes of the file.
  const std::string bytes = read_all(npy + "/study/ct.dcm.npy");
  const mm::NpyArray a = mm::parse_npy(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "ct.npy");
  CHECK(a.shape == std::vector<int64_t>{3, 32, 32});
  const mm::Tensor want = mm::preprocess(mm::read_images(f.root + "/study/ct.dcm")[0], f.meta.preprocess);
  CHECK(a.to_float() == std::vector<float>(want.f32(), want.f32() + want.numel()));
  // A PNG twice as wide as high: the input, and the heat map over it; the 32 px
  // input enlarged 7 times to 224 px.
  const std::string png = read_all(sal + "/study/ct.dcm.png");
  REQUIRE(png.size() > 24);
  CHECK(png.substr(1, 3) == "PNG");
  CHECK(uint8_t(png[18]) * 256 + uint8_t(png[19]) == 448);  // width, big-endian
  CHECK(uint8_t(png[22]) * 256 + uint8_t(png[23]) == 224);  // height

  const std::vector<json> r = jsonl_of(out);
  std::map<std::string, int> levels;
  for (const json& j : r) ++levels[j["level"].get<std::string>()];
  CHECK(levels["image"] == 14);  // 4 DICOM images (one file of 2 frames), 7 slices, an SR, 2 broken files
  CHECK(levels["series"] == 3);  // ct, mr, us
  CHECK(levels["study"] == 3);
  const json& us = r[r.size() - 4];  // the third series record
  CHECK(us["level"] == "series");
  CHECK(us["images"] == 2);
  CHECK(us["path"] == "studies/" + us["study_uid"].get<std::string>() + "/series/" + us["series_uid"].get<std::string>());
  CHECK(us["top_k"].size() == 2);
  CHECK_FALSE(us.contains("logits"));
  const json& first = r[0];
  CHECK(first["logits"].size() == 3);
  CHECK(first["top_k"][0]["label"] == first["label"]);
  // mm-eval scores image records; aggregates name no file and are simply unlabelled.
  const mm::PredictionsFile p = mm::read_predictions(out);
  CHECK(p.records.size() == 17);  // 11 images + 6 aggregates
  CHECK(p.failed == 3);
}

TEST_CASE("mm-predict says when a reader fell back (a NIfTI oriented from its qform) and classifies the file") {
  Fixture f;
  if (f.data.empty()) return;
  const std::string nifti = std::string(MM_FIXTURE_DIR) + "/nifti_affine/sform_nan_qform_fallback.nii.gz";
  REQUIRE(run_command(f.predict(nifti + " -o " + f.out("w.csv") + " 2> " + f.out("w.err"))) == 0);
  CHECK(read_all(f.out("w.err")).find("sform_nan_qform_fallback.nii.gz: orientation from qform: sform unusable") !=
        std::string::npos);
  CHECK(csv_of(f.out("w.csv")).rows.size() > 0);
  REQUIRE(run_command(f.predict("-q " + nifti + " -o " + f.out("q.csv") + " 2> " + f.out("q.err"))) == 0);
  CHECK(read_all(f.out("q.err")).empty());
}


TEST_CASE("mm-predict --table prints a readable row per image, failures with their reason, and the counts") {
  Fixture f;
  if (f.data.empty()) return;
  const std::string in = f.root + "/pictures/glioma.jpg " + f.root + "/pictures/gradient.png " + f.root +
                         "/study/truncated.dcm";
  REQUIRE(run_command(f.predict(in + " -o " + f.out("t.csv") + " --table > " + f.out("t.txt") + " 2> " +
                                f.out("t.err"))) == 3);  // one file failed
  const std::string table = read_all(f.out("t.txt"));
  INFO(table);
  const mm::CsvTable csv = csv_of(f.out("t.csv"));
  // Names relative to the inputs' common folder; the class and probability the CSV holds.
  for (size_t r = 0; r < csv.rows.size(); ++r) {
    if (field(csv, r, "status") != "ok") continue;
    const std::string name = fs::path(field(csv, r, "path")).parent_path().filename().string() + "/" +
                             fs::path(field(csv, r, "path")).filename().string();
    char prob[16];
    std::snprintf(prob, sizeof prob, "%.3f", std::stod(field(csv, r, "probability")));
    const size_t at = table.find(name);
    REQUIRE(at != std::string::npos);
    const std::string line = table.substr(at, table.find('\n', at) - at);
    CHECK(line.find(field(csv, r, "label")) != std::string::npos);
    CHECK(line.find(prob) != std::string::npos);
  }
  CHECK(table.rfind("file", 0) == 0);
  CHECK(table.find("study/truncated.dcm") != std::string::npos);
  CHECK(table.find("not classified: ") != std::string::npos);
  CHECK(table.find("predicted: ") != std::string::npos);
  CHECK(table.find("not classified 1") != std::string::npos);
  // Without -o the records themselves go to stdout: --table is refused as a usage error.
  CHECK(run_command(f.predict(in + " --table > /dev/null 2> " + f.out("u.err"))) == 2);
}

#endif  // MM_HAVE_IMAGING
