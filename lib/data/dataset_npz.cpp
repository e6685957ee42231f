#include <filesystem>
#include <future>
#include <set>

#include "core/error.h"
#include "data/dataset.h"
#include "data/npz.h"

namespace mm {

Dataset open_npz_dataset(const std::string& path, const DatasetOptions& options) {
  MM_CHECK(options.exclude_file.empty(), path + ": exclude lists apply to image folders, not to .npz files");
  Dataset d;
  d.source = path;
  d.kind = "npz";
  d.labels_are_indices = true;
  const NpzFile npz = NpzFile::open(path);
  for (const char* split : {"train", "val", "test"})
    if (npz.has(std::string(split) + "_images") && npz.has(std::string(split) + "_labels")) d.splits.push_back(split);
  MM_CHECK(!d.splits.empty(), path + ": no <split>_images/<split>_labels arrays (not a MedMNIST file)");
  if (!options.split.empty()) {
    d.split = canonical_split(options.split);
    MM_CHECK(!d.split.empty(), path + ": unknown split '" + options.split + "' (train, val or test)");
    MM_CHECK(std::find(d.splits.begin(), d.splits.end(), d.split) != d.splits.end(),
             path + ": no '" + d.split + "' split");
  }

  // The splits inflate on threads of their own: zlib is most of the time a
  // large compressed set takes to open (the brain-MRI set: 330 MB of images).
  std::vector<std::future<MedmnistSplit>> reading;
  for (const std::string& split : d.splits)
    if (d.split.empty() || split == d.split)
      reading.push_back(std::async(std::launch::async, [&npz, split] { return read_medmnist(npz, split); }));

  const std::string name = std::filesystem::path(path).filename().string();
  int64_t max_label = 0;
  for (auto& r : reading) {
    auto arrays = std::make_shared<const MedmnistSplit>(r.get());
    const std::string& split = arrays->split;
    MM_CHECK(arrays->label_columns == 1, path + ": " + split + " has " + std::to_string(arrays->label_columns) +
                                             " label columns; multi-label sets are not single-label classification");
    for (int64_t row = 0; row < arrays->count; ++row) {
      Sample s;
      s.id = name + ":" + split + ":" + std::to_string(row);
      s.label = arrays->label(row);
      MM_CHECK(s.label >= 0, s.id + ": negative label " + std::to_string(s.label));
      max_label = std::max(max_label, s.label);
      s.split = split;
      s.array = int(d.arrays.size());
      s.row = row;
      d.samples.push_back(std::move(s));
    }
    d.arrays.push_back(std::move(arrays));
  }
  for (int64_t c = 0; c <= max_label; ++c) d.class_names.push_back(std::to_string(c));
  MM_CHECK(!d.samples.empty(), path + ": no samples");
  return d;
}

}  // namespace mm
