// mm-eval's outputs (JSON keys, HTML content, console table, PNG thumbnails)
// and the mm-eval executable end to end on real images with a tiny model.
#include <doctest/doctest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "eval/evaluation.h"
#include "eval/report_console.h"
#include "eval/report_html.h"
#include "eval/report_json.h"
#include "eval_test_util.h"
#include "io/csv.h"
#include "io/png_writer.h"
#include "model/model_file.h"
#include "tiny_model.h"
#include "test_util.h"

using nlohmann::json;

namespace {

mm::Evaluation fixture_evaluation(const std::string& name, int64_t resamples = 0) {
  std::ifstream in(mm::test::fixture_path("metrics/" + name + ".json"));
  const json fx = json::parse(in);
  mm::ScoredSamples s;
  s.num_classes = fx["num_classes"].get<int64_t>();
  s.labels = fx["labels"].get<std::vector<int64_t>>();
  for (const auto& row : fx["probabilities"])
    for (double p : row) s.probabilities.push_back(p);
  std::vector<std::string> ids;
  for (size_t i = 0; i < s.labels.size(); ++i) ids.push_back("img/" + std::to_string(i) + ".png");
  return mm::evaluate(s, ids, fx["class_names"].get<std::vector<std::string>>(), {}, resamples, 7);
}

std::string read_all(const std::string& path) { return mm::read_text_file(path); }

}  // namespace

TEST_CASE("JSON report: the issue's keys, per_class by name, null where undefined, nested intervals") {
  const json j = json::parse(mm::evaluation_json(fixture_evaluation("multiclass", 50)).dump());
  for (const char* key : {"accuracy", "balanced_accuracy", "kappa", "ece", "macro", "per_class", "confusion_matrix",
                          "n", "ci"})
    CHECK_MESSAGE(j.contains(key), key);
  CHECK(j["n"] == 300);
  for (const char* key : {"precision", "recall", "specificity", "f1", "auc"}) {
    CHECK(j["macro"].contains(key));
    CHECK(j["per_class"]["glioma"].contains(key));
    CHECK(j["ci"]["macro"][key].size() == 2);
    CHECK(j["ci"]["per_class"]["pituitary"][key].size() == 2);
  }
  CHECK(j["ci"]["resamples"] == 50);
  CHECK(j["ci"]["accuracy"][0].get<double>() <= j["accuracy"].get<double>());
  CHECK(j["confusion_matrix"].size() == 4);
  CHECK(j["top_k"].contains("1"));

  const json absent = json::parse(mm::evaluation_json(fixture_evaluation("absent_class")).dump());
  CHECK(absent["macro"]["auc"].is_null());
  CHECK(absent["per_class"]["c"]["auc"].is_null());
  CHECK_FALSE(absent.contains("ci"));
  CHECK(json::parse(mm::evaluation_json(fixture_evaluation("single_class")).dump())["kappa"].is_null());
}

TEST_CASE("console table: every class, the summary and the confusion matrix") {
  const std::string text = mm::console_report(fixture_evaluation("imbalanced", 20));
  for (const char* s : {"common", "very_rare", "macro", "balanced accuracy", "Cohen's kappa", "ECE (15 bins)",
                        "confusion matrix", "95% bootstrap intervals"})
    CHECK_MESSAGE(text.find(s) != std::string::npos, s);
}

TEST_CASE("HTML report: three SVG figures, no network, mistakes most confident first, thumbnails or reasons") {
  const mm::Evaluation e = fixture_evaluation("multiclass");
  const std::vector<size_t> mistakes = mm::most_confident_mistakes(e.scores, 1000);
  CHECK(mistakes.size() == size_t(e.metrics.n - int64_t(std::llround(e.metrics.accuracy * double(e.metrics.n)))));
  for (size_t i = 1; i < mistakes.size(); ++i) {
    const double* a = e.scores.row(int64_t(mistakes[i - 1]));
    const double* b = e.scores.row(int64_t(mistakes[i]));
    CHECK(*std::max_element(a, a + 4) >= *std::max_element(b, b + 4));
  }

  mm::HtmlReportOptions o;
  o.max_mistakes = 5;
  o.sample_image = [](size_t i) {
    if (i % 2) throw mm::Error("img/" + std::to_string(i) + ".png: cannot open");
    mm::Image img;
    img.height = 40;
    img.width = 20;
    img.channels = 1;
    img.pixels.assign(800, float(i % 7));
    img.window_low = 0;
    img.window_high = 7;
    return img;
  };
  const std::string html = mm::html_report(e, o);
  size_t svgs = 0;
  for (size_t at = 0; (at = html.find("<svg", at)) != std::string::npos; ++at) ++svgs;
  CHECK(svgs == 3);
  CHECK(html.find("http") == std::string::npos);
  CHECK(html.find("data:image/png;base64,") != std::string::npos);
  CHECK(html.find("no thumbnail: img/") != std::string::npos);
  CHECK(html.find("glioma (AUC 0.907)") != std::string::npos);
  CHECK(html.find("<script>") != std::string::npos);

  mm::test::ScratchDir dir;
  const std::string path = mm::write_html_report(dir.path() + "/nested/report", e, {});
  CHECK(path == dir.path() + "/nested/report/index.html");
  CHECK(read_all(path).find("<h2>Most confident mistakes</h2>") != std::string::npos);
}

TEST_CASE("PNG encoder: signature, header, and pixels that inflate back") {
  const uint8_t rgb[2 * 3 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90};
  const std::vector<uint8_t> png = mm::encode_png(rgb, 3, 2, 3);
  REQUIRE(png.size() > 8 + 25 + 12 + 12);
  CHECK(std::equal(png.begin(), png.begin() + 8, std::vector<uint8_t>{0x89, 'P', 'N', 'G', 13, 10, 26, 10}.begin()));
  CHECK(std::string(png.begin() + 12, png.begin() + 16) == "IHDR");
  CHECK(png[19] == 3);  // width
  CHECK(png[23] == 2);  // height
  CHECK(png[24] == 8);  // bit depth
  CHECK(png[25] == 2);  // colour type RGB
  const size_t idat_len = size_t(png[33]) << 24 | size_t(png[34]) << 16 | size_t(png[35]) << 8 | png[36];
  CHECK(std::string(png.begin() + 37, png.begin() + 41) == "IDAT");
  std::vector<uint8_t> raw(2 * (1 + 9));
  uLongf raw_size = uLongf(raw.size());
  REQUIRE(uncompress(raw.data(), &raw_size, png.data() + 41, uLong(idat_len)) == Z_OK);
  CHECK(raw_size == raw.size());
  CHECK(raw[0] == 0);  // filter: none
  CHECK(std::equal(raw.begin() + 1, raw.begin() + 10, rgb));
  CHECK(std::equal(raw.begin() + 11, raw.end(), rgb + 9));
  CHECK(std::string(png.end() - 8, png.end() - 4) == "IEND");
  CHECK_THROWS_AS(mm::encode_png(rgb, 0, 2, 3), mm::Error);
}

#ifdef MM_HAVE_IMAGING
namespace {

using mm::test::run_command;

std::string mm_eval_binary() {
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "mm-eval").string();
}

// A Python with torch, scikit-learn and PIL for check_eval_against_torch.py, or "".
std::string torch_sklearn_python() {
  const char* env = std::getenv("MM_TORCH_PYTHON");
  const std::string py = env ? env : "/usr/bin/python3";
  return run_command(py + " -c 'import torch, sklearn, PIL, safetensors' > /dev/null 2>&1") == 0 ? py : "";
}

}  // namespace

TEST_CASE("mm-eval --model on real DICOM images with a tiny random model: plumbing, outputs, exit codes") {
  const std::string data = mm::test::shared_data_dir();
  if (data.empty()) return;  // no shared data on this machine
  const std::string mm_eval = mm_eval_binary();
  REQUIRE_MESSAGE(std::filesystem::exists(mm_eval), "build the mm-eval target: " << mm_eval);
  mm::test::ScratchDir dir;

  mm::LoadedModel tiny = mm::test::tiny_model({"ct", "mr", "colour", "other"}, 3);
  const std::string model_path = dir.path() + "/tiny.safetensors";
  mm::save_model(model_path, tiny.model, tiny.meta);

  const std::string dicom = data + "/dicom/pydicom/test_files/";
  const std::string manifest = dir.write("data.csv", "path,label,split\n" + dicom + "CT_small.dcm,ct,test\n" + dicom +
                                                          "MR_small.dcm,mr,test\n" + dicom + "MR_small_RLE.dcm,mr,test\n" +
                                                          dicom + "SC_rgb_rle.dcm,colour,test\n" + dicom +
                                                          "liver_1frame.dcm,ct,train\n");
  const std::string out = dir.path() + "/out";
  const std::string common = mm_eval + " --model " + model_path + " --data " + manifest + " --threads 1 -q";
  REQUIRE(run_command(common + " --batch-size 3 --bootstrap 20 --json " + out + ".json --report " + out + " > " + out +
                      ".txt") == 0);
  const json j = json::parse(read_all(out + ".json"));
  CHECK(j["n"] == 4);  // the test split
  CHECK(j["class_names"] == json({"ct", "mr", "colour", "other"}));
  CHECK(j["per_class"]["mr"]["support"] == 2);
  CHECK(j["per_class"]["other"]["auc"].is_null());  // never a true label
  CHECK(j["about"]["split"] == "test");
  int64_t total = 0;
  for (const auto& row : j["confusion_matrix"])
    for (const auto& v : row) total += v.get<int64_t>();
  CHECK(total == 4);
  CHECK(read_all(out + ".txt").find("confusion matrix") != std::string::npos);
  CHECK(read_all(out + "/index.html").find("<svg") != std::string::npos);

  // The batch size does not change the scores.
  REQUIRE(run_command(common + " --batch-size 1 --json " + out + "-b1.json > /dev/null") == 0);
  const json b1 = json::parse(read_all(out + "-b1.json"));
  CHECK(b1["per_class"] == j["per_class"]);

  CHECK(run_command(mm_eval + " --model " + model_path + " 2> /dev/null") == 2);       // usage: --data missing
  CHECK(run_command(mm_eval + " --bootstrap -3 --model a --data b 2> /dev/null") == 2);
  CHECK(run_command(mm_eval + " --model " + dir.path() + "/none.safetensors --data " + manifest +
                    " 2> /dev/null") == 1);  // runtime error
  const std::string wrong_classes = dir.write("wrong.csv", "path,label\n" + dicom + "CT_small.dcm,pet\n");
  CHECK(run_command(mm_eval + " --model " + model_path + " --data " + wrong_classes + " -q 2> " + out + ".err") == 1);
  CHECK(read_all(out + ".err").find("classes pet are not among the model's (ct, mr, colour, other)") !=
        std::string::npos);

  // A model without class names takes a class folder's classes in sorted order:
  // brain-tumour MRI JPEGs (linked, not copied) under split folders, with an exclude list.
  tiny.meta.class_names.clear();
  const std::string unnamed_path = dir.path() + "/unnamed.safetensors";
  mm::save_model(unnamed_path, tiny.model, tiny.meta);
  const std::string mri = data + "/brain-tumor-mri/";
  const std::string root = dir.path() + "/mri";
  std::string excluded;  // one notumor image, listed in the exclude file
  for (const char* cls : {"glioma", "meningioma", "notumor", "pituitary"}) {
    std::vector<std::filesystem::path> files;
    for (const auto& f : std::filesystem::directory_iterator(mri + "Testing/" + cls)) files.push_back(f.path());
    std::sort(files.begin(), files.end());
    std::filesystem::create_directories(root + "/Testing/" + cls);
    for (size_t i = 0; i < 3; ++i)
      std::filesystem::create_symlink(files[i], root + "/Testing/" + cls + "/" + files[i].filename().string());
    if (std::string(cls) == "notumor") excluded = "Testing/notumor/" + files[0].filename().string();
  }
  const std::string exclude = dir.write("mri/duplicates.txt", "# test\n" + excluded + "\n");
  REQUIRE(run_command(mm_eval + " --model " + unnamed_path + " --data " + root + " --exclude " + exclude +
                      " --threads 1 -q --json " + out + "-mri.json --report " + out + "-mri > /dev/null") == 0);
  const json mri_json = json::parse(read_all(out + "-mri.json"));
  CHECK(mri_json["n"] == 11);
  CHECK(mri_json["class_names"] == json({"glioma", "meningioma", "notumor", "pituitary"}));
  CHECK(mri_json["per_class"]["notumor"]["support"] == 2);
  CHECK(read_all(out + "-mri/index.html").find("data:image/png;base64,") != std::string::npos);  // JPEG thumbnails

  // MedMNIST: integer labels are the model's class indices.
  REQUIRE(run_command(mm_eval + " --model " + unnamed_path + " --data " + data +
                      "/medmnist/breastmnist.npz --split val --threads 1 -q --json " + out + "-breast.json > /dev/null") ==
          0);
  const json breast = json::parse(read_all(out + "-breast.json"));
  CHECK(breast["n"] == 78);
  CHECK(breast["per_class"]["class_0"]["support"] == 21);
  CHECK(breast["per_class"]["class_1"]["support"] == 57);

  // The same metrics from PyTorch's predictions through scikit-learn, with our
  // resize arithmetic (--resize float) so that float rounding is all that differs.
  const std::string py = torch_sklearn_python();
  if (py.empty()) {
    MESSAGE("skipped the PyTorch comparison: no Python with torch, sklearn and PIL (set MM_TORCH_PYTHON)");
    return;
  }
  const std::string check = py + " " + MM_SOURCE_DIR + "/test/reference/check_eval_against_torch.py --resize float "
                                                       "--tolerance 1e-6 --model " + unnamed_path;
  CHECK(run_command(check + " --data " + root + " --exclude " + exclude + " --mm-eval-json " + out +
                    "-mri.json > /dev/null") == 0);
  CHECK(run_command(check + " --data " + data + "/medmnist/breastmnist.npz --split val --mm-eval-json " + out +
                    "-breast.json > /dev/null") == 0);
}
#endif
