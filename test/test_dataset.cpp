// Labelled datasets (lib/data/dataset.h) and the CSV parser under them.
#include <doctest/doctest.h>

#include <map>

#include "core/error.h"
#include "data/dataset.h"
#include "eval_test_util.h"
#include "io/csv.h"
#include "io/png_writer.h"

namespace {

std::string tiny_png() {
  const uint8_t pixels[4] = {0, 85, 170, 255};
  const auto png = mm::encode_png(pixels, 2, 2, 1);
  return std::string(png.begin(), png.end());
}

std::map<std::string, int64_t> count_by_class(const mm::Dataset& d) {
  std::map<std::string, int64_t> counts;
  for (const auto& s : d.samples) ++counts[d.class_names[size_t(s.label)]];
  return counts;
}

}  // namespace

TEST_CASE("CSV: quotes, embedded commas and line breaks, CRLF, BOM, blank lines") {
  const mm::CsvTable t = mm::parse_csv("\xEF\xBB\xBFpath,probabilities\r\n\"a,b.png\",\"[0.25, 0.75]\"\r\n\r\n"
                                       "\"say \"\"hi\"\"\",\"two\nlines\"\n",
                                       "t.csv");
  REQUIRE(t.header == std::vector<std::string>{"path", "probabilities"});
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0] == std::vector<std::string>{"a,b.png", "[0.25, 0.75]"});
  CHECK(t.rows[1] == std::vector<std::string>{"say \"hi\"", "two\nlines"});
  CHECK(t.where(1) == "t.csv:4");
  CHECK(t.column("PROBABILITIES") == 1);
  CHECK(t.column("label") == -1);
  CHECK(mm::csv_field("a,\"b\"") == "\"a,\"\"b\"\"\"");
  CHECK(mm::csv_field("plain") == "plain");
  CHECK_THROWS_WITH_AS(mm::parse_csv("a,b\n1,2,3\n", "r.csv"), doctest::Contains("r.csv:2: 3 fields"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::parse_csv("a,b\n\"1,2\n", "q.csv"), doctest::Contains("q.csv:2: quoted field never closed"),
                       mm::Error);
}

TEST_CASE("image folder: classes sorted, non-images skipped, split folders, exclude list") {
  mm::test::ScratchDir dir;
  const std::string png = tiny_png();
  for (const char* f : {"Training/b_class/1.png", "Training/a_class/1.png", "Training/a_class/sub/2.png",
                        "Testing/a_class/3.png", "Testing/c_class/4.png", "Testing/c_class/5.png"})
    dir.write(f, png);
  dir.write("Testing/c_class/notes.txt", "not an image");
  dir.write("Testing/c_class/.hidden.png", png);
  dir.write("other/x/6.png", png);  // beside split folders: ignored
  dir.write("exclude.txt", "# duplicates of training images\nTesting/c_class/5.png\n\n");

  const mm::Dataset test = mm::open_image_folder(dir.path(), {"test", dir.path() + "/exclude.txt"});
  CHECK(test.kind == "folder");
  CHECK(test.class_names == std::vector<std::string>{"a_class", "b_class", "c_class"});  // union over splits
  CHECK(test.splits == std::vector<std::string>{"train", "test"});
  CHECK(test.split == "test");
  REQUIRE(test.samples.size() == 2);
  CHECK(test.samples[0].id == "Testing/a_class/3.png");
  CHECK(test.samples[0].label == 0);
  CHECK(test.samples[1].id == "Testing/c_class/4.png");
  CHECK(test.samples[1].label == 2);
  CHECK(test.samples[1].split == "test");
  CHECK(test.excluded == 1);
  CHECK(test.skipped == 1);

  const mm::Dataset train = mm::open_dataset(dir.path(), {"training", ""});
  REQUIRE(train.samples.size() == 3);
  CHECK(train.samples[1].id == "Training/a_class/sub/2.png");  // recursive
  CHECK(mm::open_image_folder(dir.path(), {}).samples.size() == 6);  // every split

  CHECK_THROWS_WITH_AS(mm::open_image_folder(dir.path(), {"val", ""}),
                       doctest::Contains("no 'val' split folder (splits here: train, test)"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::open_image_folder(dir.path(), {"holdout", ""}), doctest::Contains("unknown split 'holdout'"),
                       mm::Error);
  dir.write("bad-exclude.txt", "Testing/c_class/missing.png\n");
  CHECK_THROWS_WITH_AS(mm::open_image_folder(dir.path(), {"test", dir.path() + "/bad-exclude.txt"}),
                       doctest::Contains("bad-exclude.txt:1: 'Testing/c_class/missing.png' is no file under"),
                       mm::Error);

  // Without split folders the sub-folders are the classes, and --split does not apply.
  mm::test::ScratchDir flat;
  flat.write("yes/1.png", png);
  flat.write("no/2.png", png);
  const mm::Dataset f = mm::open_image_folder(flat.path(), {"test", ""});
  CHECK(f.class_names == std::vector<std::string>{"no", "yes"});
  CHECK(f.split.empty());
  CHECK(f.samples.size() == 2);
}

TEST_CASE("image folder: the brain-tumour MRI test split without its duplicates of training images") {
  const std::string data = mm::test::shared_data_dir();
  if (data.empty()) return;  // no shared data on this machine
  const std::string root = data + "/brain-tumor-mri";
  const mm::Dataset all = mm::open_image_folder(root, {"test", ""});
  CHECK(all.class_names == std::vector<std::string>{"glioma", "meningioma", "notumor", "pituitary"});
  CHECK(count_by_class(all) ==
        std::map<std::string, int64_t>{{"glioma", 300}, {"meningioma", 306}, {"notumor", 405}, {"pituitary", 300}});
  const mm::Dataset fair = mm::open_image_folder(root, {"test", root + "/test-duplicates-of-train.txt"});
  CHECK(fair.samples.size() == 1095);
  CHECK(fair.excluded == 216);
}

TEST_CASE("CSV manifest: named or integer labels, splits, paths relative to the manifest") {
  mm::test::ScratchDir dir;
  const std::string named = dir.write("lists/m.csv",
                                      "path,label,split\n"
                                      "img/a.png,pneumonia,train\n"
                                      "/abs/b.png,normal,test\n"
                                      "img/../img/c.png,pneumonia,Testing\n");
  const mm::Dataset d = mm::open_csv_manifest(named, {"test", ""});
  CHECK(d.kind == "csv");
  CHECK(d.class_names == std::vector<std::string>{"normal", "pneumonia"});
  CHECK_FALSE(d.labels_are_indices);
  CHECK(d.splits == std::vector<std::string>{"train", "test"});
  REQUIRE(d.samples.size() == 2);
  CHECK(d.samples[0].id == "/abs/b.png");
  CHECK(d.samples[0].file == "/abs/b.png");
  CHECK(d.samples[0].label == 0);
  CHECK(d.samples[1].id == "img/../img/c.png");
  CHECK(d.samples[1].file == dir.path() + "/lists/img/c.png");
  CHECK(mm::open_dataset(named).samples.size() == 3);

  const std::string indices = dir.write("idx.csv", "x.png,1\ny.png,3\n");  // no header
  const mm::Dataset i = mm::open_csv_manifest(indices, {"test", ""});
  CHECK(i.labels_are_indices);
  CHECK(i.class_names == std::vector<std::string>{"0", "1", "2", "3"});
  REQUIRE(i.samples.size() == 2);
  CHECK(i.samples[1].label == 3);
  CHECK(i.split.empty());

  CHECK_THROWS_WITH_AS(mm::open_csv_manifest(dir.write("e.csv", "path,label\nx.png,\n")),
                       doctest::Contains("e.csv:2: empty label"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::open_csv_manifest(dir.write("s.csv", "path,label,split\nx.png,a,later\n")),
                       doctest::Contains("s.csv:2: unknown split 'later'"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::open_csv_manifest(named, {"val", ""}), doctest::Contains("no samples in split 'val'"),
                       mm::Error);
  CHECK_THROWS_WITH_AS(mm::open_dataset(dir.write("x.txt", "")), doctest::Contains("not a dataset"), mm::Error);
  // Found by fuzz_tables: one column and no header read past each row; a large index
  // label made that many classes (999,999,999 names).
  CHECK_THROWS_WITH_AS(mm::open_csv_manifest(dir.write("one.csv", "a.png\nb.png\n")),
                       doctest::Contains("one.csv: needs 'path' and 'label' columns"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::open_csv_manifest(dir.write("big.csv", "path,label\na.png,999999999\nb.png,0\n")),
                       doctest::Contains("label 999999999 as a class index makes that many classes (at most 65536)"),
                       mm::Error);
  CHECK(mm::open_csv_manifest(dir.write("max.csv", "path,label\na.png,65535\n")).num_classes() == 65536);
}

TEST_CASE("load_image: files through the caller's reader, arrays from memory") {
  mm::Dataset d;
  auto array = std::make_shared<mm::MedmnistSplit>();
  array->count = 2;
  array->item_shape = {1, 2};
  array->images = {1, 2, 3, 4};
  array->labels = {0, 1};
  d.arrays.push_back(array);
  mm::Sample in_memory;
  in_memory.id = "x.npz:test:1";
  in_memory.array = 0;
  in_memory.row = 1;
  mm::Sample file;
  file.file = "/some/file.dcm";
  d.samples = {in_memory, file};
  const mm::Image a = mm::load_image(d, 0, {});
  CHECK(a.pixels == std::vector<float>{3, 4});
  CHECK(a.window_high == 255);
  CHECK(a.source_path == "x.npz:test:1");
  std::string asked;
  mm::load_image(d, 1, [&](const std::string& f, const mm::ReadHints&) {
    asked = f;
    return mm::Image{};
  });
  CHECK(asked == "/some/file.dcm");
  CHECK_THROWS_WITH_AS(mm::load_image(d, 1, {}), doctest::Contains("no image reader"), mm::Error);
}

TEST_CASE("MedMNIST .npz: splits, integer labels, 28x28 grey images held in memory") {
  const std::string data = mm::test::shared_data_dir();
  if (data.empty()) return;  // no shared data on this machine
  const std::string path = data + "/medmnist/pneumoniamnist.npz";
  const mm::Dataset test = mm::open_dataset(path, {"test", ""});
  CHECK(test.kind == "npz");
  CHECK(test.labels_are_indices);
  CHECK(test.splits == std::vector<std::string>{"train", "val", "test"});
  CHECK(test.class_names == std::vector<std::string>{"0", "1"});
  CHECK(count_by_class(test) == std::map<std::string, int64_t>{{"0", 234}, {"1", 390}});
  CHECK(test.samples[5].id == "pneumoniamnist.npz:test:5");
  const mm::Image img = mm::load_image(test, 5, {});
  CHECK(img.height == 28);
  CHECK(img.width == 28);
  CHECK(img.channels == 1);
  CHECK(img.window_high == 255);
  CHECK(mm::open_npz_dataset(path, {}).samples.size() == 4708 + 524 + 624);
  mm::Dataset named = test;
  mm::name_index_classes(named, {"normal", "pneumonia"});
  CHECK(named.class_names == std::vector<std::string>{"normal", "pneumonia"});
  CHECK_THROWS_WITH_AS(mm::name_index_classes(named, {"a", "b", "c"}), doctest::Contains("3 class names for"),
                       mm::Error);
  CHECK_THROWS_WITH_AS(mm::name_index_classes(named, {"a", "a"}), doctest::Contains("given twice"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::name_index_classes(named, {"a", ""}), doctest::Contains("is empty"), mm::Error);
  CHECK_THROWS_WITH_AS(mm::open_npz_dataset(path, {"test", "x.txt"}), doctest::Contains("exclude lists apply"),
                       mm::Error);
  const mm::Dataset adrenal = mm::open_npz_dataset(data + "/medmnist/adrenalmnist3d.npz", {"val", ""});
  CHECK(adrenal.samples.size() == 98);
  CHECK(mm::load_image(adrenal, 0, {}).slice_index == 14);  // 3-D: the middle slice
}
