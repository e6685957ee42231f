#include "data/dataset.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/error.h"
#include "data/file_kind.h"
#include "io/csv.h"

namespace fs = std::filesystem;

namespace mm {

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower((unsigned char)c));
  return s;
}

bool hidden(const fs::path& p) { return p.filename().string().rfind('.', 0) == 0; }

std::vector<fs::path> sorted_subdirectories(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && !hidden(e.path())) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// Every image file under dir, recursively, in path order. Files whose content
// is no image format we read (notes, thumbnails.db, ...) are counted, not listed.
std::vector<fs::path> image_files_under(const fs::path& dir, int64_t& skipped) {
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it) {
    if (hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  std::vector<fs::path> images;
  for (const auto& f : files) {
    if (detect_file_kind(f.string()) == FileKind::Unknown)
      ++skipped;
    else
      images.push_back(f);
  }
  return images;
}

// Removes the samples the exclude list names; ids are relative to root.
void apply_exclude_list(Dataset& d, const fs::path& root, const std::string& exclude_file) {
  if (exclude_file.empty()) return;
  std::istringstream lines(read_text_file(exclude_file));
  std::set<std::string> excluded;
  std::string line;
  for (int64_t line_no = 1; std::getline(lines, line); ++line_no) {
    if (const size_t hash = line.find('#'); hash != std::string::npos) line.erase(hash);
    while (!line.empty() && std::isspace((unsigned char)line.back())) line.pop_back();
    while (!line.empty() && std::isspace((unsigned char)line.front())) line.erase(line.begin());
    if (line.empty()) continue;
    fs::path entry(line);
    if (entry.is_absolute()) entry = entry.lexically_relative(root);
    entry = entry.lexically_normal();
    MM_CHECK(fs::is_regular_file(root / entry), exclude_file + ":" + std::to_string(line_no) + ": '" + line +
                                                     "' is no file under " + root.string() +
                                                     " (entries are relative to the dataset root)");
    excluded.insert(entry.generic_string());
  }
  const size_t before = d.samples.size();
  d.samples.erase(std::remove_if(d.samples.begin(), d.samples.end(),
                                 [&](const Sample& s) { return excluded.count(s.id) > 0; }),
                  d.samples.end());
  d.excluded = int64_t(before - d.samples.size());
}

// Checks a requested split name and returns its canonical form ("" for none).
std::string requested_split(const DatasetOptions& options, const std::string& source) {
  if (options.split.empty()) return "";
  const std::string split = canonical_split(options.split);
  MM_CHECK(!split.empty(), source + ": unknown split '" + options.split + "' (train, val or test)");
  return split;
}

// train, val, test: the order splits are listed in.
std::vector<std::string> splits_in_order(const std::set<std::string>& found) {
  std::vector<std::string> out;
  for (const char* name : {"train", "val", "test"})
    if (found.count(name)) out.push_back(name);
  return out;
}

constexpr int64_t kMaxClassIndex = 65535;

bool is_index(const std::string& s) {
  return !s.empty() && s.size() < 10 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

std::string canonical_split(const std::string& name) {
  const std::string n = lower(name);
  if (n == "train" || n == "training") return "train";
  if (n == "val" || n == "valid" || n == "validation") return "val";
  if (n == "test" || n == "testing") return "test";
  return "";
}

Dataset open_image_folder(const std::string& root_path, const DatasetOptions& options) {
  const fs::path root(root_path);
  MM_CHECK(fs::is_directory(root), root_path + ": not a directory");
  Dataset d;
  d.source = root_path;
  d.kind = "folder";

  // Split folders (train/val/test and aliases) hold the class folders; other
  // folders beside them are ignored. Without split folders, the root's
  // sub-folders are the classes.
  std::vector<fs::path> split_dirs;
  for (const auto& dir : sorted_subdirectories(root))
    if (!canonical_split(dir.filename().string()).empty()) split_dirs.push_back(dir);
  const std::string wanted = requested_split(options, root_path);
  std::vector<fs::path> chosen_dirs;  // (split folder or root) whose class folders are read
  std::set<std::string> class_set;
  if (split_dirs.empty()) {
    chosen_dirs.push_back(root);
    for (const auto& c : sorted_subdirectories(root)) class_set.insert(c.filename().string());
  } else {
    std::set<std::string> found;
    for (const auto& s : split_dirs) {
      const std::string canon = canonical_split(s.filename().string());
      found.insert(canon);
      // Classes are the union over every split, so indices agree between splits.
      for (const auto& c : sorted_subdirectories(s)) class_set.insert(c.filename().string());
      if (wanted.empty() || canon == wanted) chosen_dirs.push_back(s);
    }
    d.splits = splits_in_order(found);
    MM_CHECK(!chosen_dirs.empty(),
             root_path + ": no '" + wanted + "' split folder (splits here: " + join(d.splits) + ")");
    d.split = wanted;
  }
  d.class_names.assign(class_set.begin(), class_set.end());  // sorted, as torchvision's ImageFolder
  MM_CHECK(!d.class_names.empty(), root_path + ": no class sub-folders");

  for (const auto& dir : chosen_dirs) {
    const std::string split = dir == root ? "" : canonical_split(dir.filename().string());
    for (int64_t c = 0; c < d.num_classes(); ++c) {
      const fs::path class_dir = dir / d.class_names[size_t(c)];
      if (!fs::is_directory(class_dir)) continue;
      for (const auto& f : image_files_under(class_dir, d.skipped)) {
        Sample s;
        s.id = f.lexically_relative(root).generic_string();
        s.file = f.string();
        s.label = c;
        s.split = split;
        d.samples.push_back(std::move(s));
      }
    }
  }
  apply_exclude_list(d, root, options.exclude_file);
  MM_CHECK(!d.samples.empty(), root_path + ": no images" + (d.split.empty() ? "" : " in split '" + d.split + "'"));
  return d;
}

Dataset open_csv_manifest(const std::string& path, const DatasetOptions& options) {
  CsvTable t = read_csv_file(path);
  int path_col = t.column("path"), label_col = t.column("label"), split_col = t.column("split");
  if (path_col < 0 && label_col < 0) {  // no header: path,label[,split] by position
    MM_CHECK(t.header.size() >= 2, path + ": needs 'path' and 'label' columns (a header, or two columns by position)");
    t.rows.insert(t.rows.begin(), t.header);
    t.row_lines.insert(t.row_lines.begin(), 1);
    path_col = 0;
    label_col = 1;
    split_col = t.header.size() > 2 ? 2 : -1;
  }
  MM_CHECK(path_col >= 0 && label_col >= 0, path + ": needs 'path' and 'label' columns");
  Dataset d;
  d.source = path;
  d.kind = "csv";
  const fs::path base = fs::path(path).parent_path();

  // Classes from every row, so that indices agree between splits.
  std::set<std::string> names;
  bool all_indices = true;
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const std::string& label = t.rows[r][size_t(label_col)];
    MM_CHECK(!label.empty(), t.where(r) + ": empty label");
    MM_CHECK(!t.rows[r][size_t(path_col)].empty(), t.where(r) + ": empty path");
    names.insert(label);
    all_indices = all_indices && is_index(label);
  }
  if (all_indices) {
    int64_t max_index = 0;
    for (const auto& n : names) max_index = std::max<int64_t>(max_index, std::stoll(n));
    // Every index up to the largest becomes a class: a stray large number must not make millions.
    MM_CHECK(max_index <= kMaxClassIndex, path + ": label " + std::to_string(max_index) +
                                              " as a class index makes that many classes (at most " +
                                              std::to_string(kMaxClassIndex + 1) + "); name the classes instead");
    for (int64_t c = 0; c <= max_index; ++c) d.class_names.push_back(std::to_string(c));
    d.labels_are_indices = true;
  } else {
    d.class_names.assign(names.begin(), names.end());
  }

  const std::string wanted = split_col >= 0 ? requested_split(options, path) : "";
  std::set<std::string> splits;
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    Sample s;
    s.id = row[size_t(path_col)];
    const fs::path p(s.id);
    s.file = (p.is_absolute() ? p : base / p).lexically_normal().string();
    const std::string& label = row[size_t(label_col)];
    s.label = all_indices ? std::stoll(label)
                          : int64_t(std::lower_bound(d.class_names.begin(), d.class_names.end(), label) -
                                    d.class_names.begin());
    if (split_col >= 0) {
      s.split = canonical_split(row[size_t(split_col)]);
      MM_CHECK(!s.split.empty(), t.where(r) + ": unknown split '" + row[size_t(split_col)] + "'");
      splits.insert(s.split);
      if (!wanted.empty() && s.split != wanted) continue;
    }
    d.samples.push_back(std::move(s));
  }
  d.splits = splits_in_order(splits);
  d.split = wanted;
  MM_CHECK(!d.samples.empty(), path + ": no samples" + (wanted.empty() ? "" : " in split '" + wanted + "'"));
  return d;
}

void name_index_classes(Dataset& d, const std::vector<std::string>& names) {
  MM_CHECK(d.labels_are_indices, d.source + ": its classes have names already (" +
                                     (d.kind == "folder" ? "the folder names" : "the CSV labels") +
                                     "); class names are for data labelled 0, 1, ...");
  MM_CHECK(int64_t(names.size()) == d.num_classes(),
           std::to_string(names.size()) + " class names for " + d.source + ", whose labels are 0.." +
               std::to_string(d.num_classes() - 1) + " (" + std::to_string(d.num_classes()) + " classes)");
  for (size_t i = 0; i < names.size(); ++i) {
    MM_CHECK(!names[i].empty(), "class name " + std::to_string(i) + " is empty");
    for (size_t j = 0; j < i; ++j) MM_CHECK(names[i] != names[j], "class name '" + names[i] + "' is given twice");
  }
  d.class_names = names;
}

Dataset open_dataset(const std::string& path, const DatasetOptions& options) {
  if (fs::is_directory(path)) return open_image_folder(path, options);
  MM_CHECK(fs::exists(path), path + ": no such file or folder");
  const std::string ext = lower(fs::path(path).extension().string());
  if (ext == ".csv") return open_csv_manifest(path, options);
  if (ext == ".npz") return open_npz_dataset(path, options);
  throw Error(path + ": not a dataset (a class folder, a .csv manifest or a MedMNIST .npz)");
}

Image load_image(const Dataset& d, size_t sample_index, const ImageFileReader& read_file, const ReadHints& hints) {
  const Sample& s = d.samples.at(sample_index);
  if (s.array >= 0) {
    Image img = d.arrays.at(size_t(s.array))->image(s.row);  // 3-D: the middle slice
    img.source_path = s.id;
    return img;
  }
  MM_CHECK(bool(read_file), s.file + ": no image reader available for files");
  return read_file(s.file, hints);
}

}  // namespace mm
