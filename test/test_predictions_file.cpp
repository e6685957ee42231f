// Predictions files in every accepted layout, and their join with labels.
#include <doctest/doctest.h>

#include <filesystem>

#include "core/error.h"
#include "eval/predictions_file.h"
#include "eval_test_util.h"

namespace {

const std::vector<std::string> kNames{"glioma", "meningioma", "notumor"};

// The same three predictions in each layout a predictions file may have.
void check_three(const mm::PredictionsFile& p) {
  REQUIRE(p.records.size() == 3);
  CHECK(p.class_names == kNames);
  CHECK(p.records[0].path == "a.jpg");
  CHECK(p.records[0].probabilities == std::vector<double>{0.7, 0.2, 0.1});
  CHECK(p.records[2].probabilities == std::vector<double>{0.1, 0.1, 0.8});
}

}  // namespace

TEST_CASE("predictions: mm-predict CSV with a probabilities column, prob_ columns, per-class columns") {
  mm::test::ScratchDir dir;
  check_three(mm::read_predictions(dir.write("p.csv",
                                             "path,label,class_index,probability,probabilities\n"
                                             "a.jpg,glioma,0,0.7,\"[0.7,0.2,0.1]\"\n"
                                             "b.jpg,meningioma,1,0.6,\"[0.3,0.6,0.1]\"\n"
                                             "c.jpg,notumor,2,0.8,\"[0.1,0.1,0.8]\"\n")));
  check_three(mm::read_predictions(dir.write("q.csv",
                                             "path,frame,label,prob_glioma,prob_meningioma,prob_notumor\n"
                                             "a.jpg,,glioma,0.7,0.2,0.1\n"
                                             "b.jpg,,meningioma,0.3,0.6,0.1\n"
                                             "c.jpg,,notumor,0.1,0.1,0.8\n")));
  check_three(mm::read_predictions(dir.write("other-system.csv",
                                             "image,glioma,meningioma,notumor\n"
                                             "a.jpg,0.7,0.2,0.1\n"
                                             "b.jpg,0.3,0.6,0.1\n"
                                             "c.jpg,0.1,0.1,0.8\n")));
  CHECK_THROWS_WITH_AS(mm::read_predictions(dir.write("text.csv", "path,site,p0,p1\na.jpg,north,0.2,0.8\n")),
                       doctest::Contains("text.csv:2: column site: not a number"), mm::Error);
  // Found by fuzz_tables: quoting a value that is not UTF-8 in the message threw
  // nlohmann's type_error instead; such bytes are shown as U+FFFD.
  CHECK_THROWS_WITH_AS(mm::read_predictions(dir.write("latin1.csv", "path,probabilities\na.jpg,caf\xe9\n")),
                       doctest::Contains("is neither a JSON list nor an object: \"caf\xef\xbf\xbd\""), mm::Error);
  // Nested 100,000 deep, such values overflowed the stack: in nlohmann's parser, as
  // an object holding one grew, and in its serializer, quoting one in a message.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  CHECK_THROWS_WITH_AS(mm::read_predictions(dir.write("deep.csv", "path,probabilities\na.jpg,\"[" + deep + "]\"\n")),
                       doctest::Contains("deep.csv:2: JSON nested deeper than 64 levels"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::read_predictions(dir.write("deep.json", "[{\"path\": " + deep + ", \"x\": 1}]")),
                       doctest::Contains("deep.json: JSON nested deeper than 64 levels"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::read_predictions(dir.write("list.json", "[{\"path\": [[1]], \"probabilities\": [[0.5]]}]")),
                       doctest::Contains("record 1: 'path' is a JSON list, not text"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::read_predictions(dir.write("list2.json", "[{\"path\": \"a\", \"probabilities\": [[0.5]]}]")),
                       doctest::Contains("record 1: probabilities: not a number: a JSON list"), mm::Error);
}

TEST_CASE("predictions: JSON list, JSON document with records, JSONL, error records") {
  mm::test::ScratchDir dir;
  const std::string records =
      R"({"path": "a.jpg", "label": "glioma", "class_index": 0, "probabilities": [0.7, 0.2, 0.1]},
         {"path": "b.jpg", "label": "meningioma", "class_index": 1, "probabilities": [0.3, 0.6, 0.1]},
         {"path": "bad.dcm", "error": "corrupt: truncated pixel data"},
         {"path": "c.jpg", "label": "notumor", "class_index": 2, "probabilities": [0.1, 0.1, 0.8]})";
  const mm::PredictionsFile list = mm::read_predictions(dir.write("p.json", "[" + records + "]"));
  check_three(list);
  CHECK(list.failed == 1);
  check_three(mm::read_predictions(dir.write("doc.json", R"({"class_names": ["glioma", "meningioma", "notumor"],
      "records": [{"path": "a.jpg", "probabilities": [0.7, 0.2, 0.1]},
                  {"path": "b.jpg", "probabilities": [0.3, 0.6, 0.1]},
                  {"path": "c.jpg", "probabilities": [0.1, 0.1, 0.8]}]})")));
  // JSONL, with the probabilities as an object keyed by class name; detected by content too.
  const std::string lines = R"({"path": "a.jpg", "probabilities": {"glioma": 0.7, "meningioma": 0.2, "notumor": 0.1}}
{"path": "b.jpg", "probabilities": {"glioma": 0.3, "meningioma": 0.6, "notumor": 0.1}}
{"path": "c.jpg", "probabilities": {"glioma": 0.1, "meningioma": 0.1, "notumor": 0.8}}
)";
  check_three(mm::read_predictions(dir.write("p.jsonl", lines)));
  check_three(mm::read_predictions(dir.write("p.out", lines)));

  CHECK_THROWS_WITH_AS(mm::read_predictions(dir.write("n.jsonl", R"({"path": "a", "probabilities": [0.5, 0.5]}
{"path": "b", "probabilities": [0.2, 0.3, 0.5]}
)")),
                       doctest::Contains("n.jsonl:2: 3 probabilities where earlier records have 2"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::read_predictions(dir.write("c.jsonl", R"({"path": "a", "label": "x", "class_index": 0, "probabilities": [0.5, 0.5]}
{"path": "b", "label": "y", "class_index": 0, "probabilities": [0.6, 0.4]}
)")),
                       doctest::Contains("class 0 is called 'y' here and 'x' before"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::read_predictions(dir.write("broken.json", "[{\"path\": ")),
                       doctest::Contains("broken.json: not valid JSON"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::read_predictions(dir.write("none.jsonl", R"({"path": "a", "error": "x"})")),
                       doctest::Contains("no records with probabilities (1 error records)"), mm::Error);
}

TEST_CASE("join: by path as written or as absolute paths; named and integer labels; missing predictions") {
  mm::test::ScratchDir dir;
  const std::string preds = dir.write("p.csv",
                                      "path,prob_normal,prob_pneumonia\n"
                                      "img/1.png,0.9,0.1\n"
                                      "img/2.png,0.2,0.8\n" +
                                          dir.path() + "/data/3.png,0.4,0.6\n"
                                                       "unlabelled.png,0.5,0.5\n");
  const mm::PredictionsFile p = mm::read_predictions(preds);

  // img/... as written; 3.png relative to the labels file's folder, matched as an absolute path.
  const std::string labels = dir.write("data/labels.csv", "path,label\n3.png,pneumonia\n");
  const std::string labels2 = dir.write("labels2.csv", "path,label\nimg/./1.png,normal\nimg/2.png,normal\n");
  const mm::JoinedPredictions a = mm::join_predictions(p, mm::open_csv_manifest(labels));
  CHECK(a.ids == std::vector<std::string>{"3.png"});
  CHECK(a.scores.labels == std::vector<int64_t>{1});
  CHECK(a.scores.probabilities == std::vector<double>{0.4, 0.6});
  CHECK(a.unlabelled == 3);
  const mm::JoinedPredictions b = mm::join_predictions(p, mm::open_csv_manifest(labels2));
  CHECK(b.scores.labels == std::vector<int64_t>{0, 0});
  CHECK(b.class_names == std::vector<std::string>{"normal", "pneumonia"});
  CHECK(b.label_samples == std::vector<size_t>{0, 1});

  const mm::Dataset by_index = mm::open_csv_manifest(dir.write("i.csv", "path,label\nimg/1.png,1\n"));
  CHECK(mm::join_predictions(p, by_index).scores.labels == std::vector<int64_t>{1});
  const mm::Dataset too_big = mm::open_csv_manifest(dir.write("j.csv", "path,label\nimg/1.png,2\n"));
  CHECK_THROWS_WITH_AS(mm::join_predictions(p, too_big), doctest::Contains("is not one of the predictions' classes"),
                       mm::Error);

  const mm::Dataset missing = mm::open_csv_manifest(dir.write("m.csv", "path,label\nimg/1.png,normal\nnope.png,normal\n"));
  CHECK_THROWS_WITH_AS(mm::join_predictions(p, missing), doctest::Contains("1 labelled paths of"), mm::Error);
  const mm::JoinedPredictions c = mm::join_predictions(p, missing, {}, /*allow_missing=*/true);
  CHECK(c.missing == std::vector<std::string>{"nope.png"});
  CHECK(c.ids.size() == 1);

  // Class names the predictions file lacks come from --class-names.
  const mm::PredictionsFile unnamed = mm::read_predictions(dir.write("u.jsonl", R"({"path": "img/1.png", "probabilities": [0.9, 0.1]}
)"));
  CHECK(unnamed.class_names == std::vector<std::string>{"", ""});
  const mm::Dataset named = mm::open_csv_manifest(dir.write("n.csv", "path,label\nimg/1.png,sick\n"));
  CHECK_THROWS_WITH_AS(mm::join_predictions(unnamed, named), doctest::Contains("--class-names"), mm::Error);
  const mm::JoinedPredictions d = mm::join_predictions(unnamed, named, {"healthy", "sick"});
  CHECK(d.scores.labels == std::vector<int64_t>{1});
  CHECK_THROWS_WITH_AS(mm::join_predictions(unnamed, named, {"a", "b", "c"}), doctest::Contains("gives 3 names"),
                       mm::Error);

  const mm::PredictionsFile twice =
      mm::read_predictions(dir.write("t.csv", "path,p0,p1\nimg/1.png,0.5,0.5\nimg/./1.png,0.4,0.6\n"));
  CHECK_THROWS_WITH_AS(mm::join_predictions(twice, by_index), doctest::Contains("has several predictions"), mm::Error);
}
