#include "predict/inputs.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "io/csv.h"

namespace fs = std::filesystem;

namespace mm {

namespace {

bool hidden(const fs::path& p) { return p.filename().string().rfind('.', 0) == 0; }

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string normal(const fs::path& p) { return p.lexically_normal().string(); }

// x.img (x.img.gz) is the data half of an Analyze/NIfTI pair when x.hdr or
// x.hdr.gz is beside it; the reader reads the pair from the header.
bool is_data_half_of_pair(const fs::path& file) {
  const std::string name = file.string();
  for (const char* ext : {".img", ".img.gz"})
    if (ends_with(name, ext)) {
      const std::string stem = name.substr(0, name.size() - std::string(ext).size());
      std::error_code ec;
      return fs::exists(stem + ".hdr", ec) || fs::exists(stem + ".hdr.gz", ec);
    }
  return false;
}

class Collector {
 public:
  explicit Collector(InputListing& out) : out_(out) {}

  void add(const std::string& path, bool found_in_folder) {
    const std::string key = normal(path);
    auto [it, inserted] = index_.emplace(key, out_.files.size());
    if (inserted)
      out_.files.push_back({key, found_in_folder});
    else if (!found_in_folder)
      out_.files[it->second].found_in_folder = false;  // named explicitly: its failures count
  }

  void add_path(const std::string& path) {
    std::error_code ec;
    if (fs::is_directory(path, ec))
      walk(path);
    else
      add(path, false);  // a file, or a path that does not exist: the decoder reports it
  }

 private:
  void walk(const fs::path& dir) {
    std::error_code ec;
    const fs::path canonical = fs::canonical(dir, ec);
    if (!ec && !visited_.insert(canonical.string()).second) return;  // a link back into a walked folder
    fs::directory_iterator it(dir, ec), end;
    if (ec) {  // unreadable folder: reported as a failed input, the run goes on
      add(dir.string(), false);
      return;
    }
    std::vector<fs::path> entries;
    for (; it != end; it.increment(ec)) {
      if (ec) break;
      entries.push_back(it->path());
    }
    std::sort(entries.begin(), entries.end());
    for (const fs::path& p : entries) {
      if (hidden(p)) {
        out_.hidden_skipped.push_back(normal(p));
        continue;
      }
      std::error_code sec;
      const fs::file_status st = fs::status(p, sec);
      if (fs::is_directory(st))
        walk(p);
      else if (fs::is_regular_file(st) && !is_data_half_of_pair(p))
        add(p.string(), true);
      else if (!fs::exists(st) && fs::is_symlink(fs::symlink_status(p, sec)))
        add(p.string(), false);  // a broken link: worth reporting, not skipping
    }
  }

  InputListing& out_;
  std::map<std::string, size_t> index_;
  std::set<std::string> visited_;
};

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  size_t start = 0;
  while (start < s.size() && (s[start] == ' ' || s[start] == '\t')) ++start;
  return s.substr(start);
}

void read_list_file(const std::string& list, Collector& collector) {
  std::string text;
  fs::path base;
  if (list == "-") {
    std::ostringstream all;
    all << std::cin.rdbuf();
    text = all.str();
  } else {
    text = read_text_file(list);
    base = fs::path(list).parent_path();
  }
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    line = trimmed(line);
    if (line.empty() || line[0] == '#') continue;
    const fs::path entry(line);
    collector.add_path(entry.is_absolute() ? entry.string() : (base / entry).string());
  }
}

fs::path absolute_normal(const std::string& p) { return fs::absolute(p).lexically_normal(); }

}  // namespace

InputListing find_inputs(const std::vector<std::string>& paths, const std::vector<std::string>& list_files) {
  InputListing out;
  Collector collector(out);
  for (const std::string& p : paths) collector.add_path(p);
  for (const std::string& list : list_files) read_list_file(list, collector);
  std::sort(out.files.begin(), out.files.end(),
            [](const InputFile& a, const InputFile& b) { return a.path < b.path; });
  return out;
}

Shard parse_shard(const std::string& text) {
  long long index = 0, count = 0;
  char tail = 0;
  const bool parsed = std::sscanf(text.c_str(), "%lld/%lld%c", &index, &count, &tail) == 2;
  MM_CHECK(parsed && count >= 1 && index >= 1 && index <= count,
           "--shard '" + text + "': expected i/N with 1 <= i <= N (shards are numbered from 1, as Slurm's "
                                "--array=1-N numbers its tasks)");
  return {index, count};
}

std::vector<InputFile> select_shard(const std::vector<InputFile>& files, Shard shard) {
  const int64_t n = int64_t(files.size());
  const int64_t begin = n * (shard.index - 1) / shard.count, end = n * shard.index / shard.count;
  return std::vector<InputFile>(files.begin() + begin, files.begin() + end);
}

std::string common_folder(const std::vector<InputFile>& files) {
  if (files.empty()) return fs::current_path().string();
  fs::path common = absolute_normal(files[0].path).parent_path();
  for (const InputFile& f : files) {
    const fs::path dir = absolute_normal(f.path).parent_path();
    fs::path shared;
    auto a = common.begin(), b = dir.begin();
    for (; a != common.end() && b != dir.end() && *a == *b; ++a, ++b) shared /= *a;
    common = shared;
  }
  return common.string();
}

std::string derived_file_name(const std::string& root, const std::string& input_path, int64_t frame, int64_t slice,
                              const std::string& extension) {
  fs::path rel = absolute_normal(input_path).lexically_relative(absolute_normal(root));
  if (rel.empty() || *rel.begin() == "..") rel = absolute_normal(input_path).relative_path();
  std::string name = rel.string();
  char index[32];
  if (frame >= 0) {
    std::snprintf(index, sizeof index, ".frame%04lld", (long long)frame);
    name += index;
  }
  if (slice >= 0) {
    std::snprintf(index, sizeof index, ".slice%04lld", (long long)slice);
    name += index;
  }
  return name + extension;
}

}  // namespace mm
