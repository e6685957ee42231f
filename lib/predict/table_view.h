#pragma once
// mm-predict --table: a readable view of the records for a person at a terminal, beside the
// machine-readable file -o writes. One line per image as it is classified (the file relative
// to the inputs' common folder, the predicted class, its probability), failures with their
// reason, then the count per predicted class, then a line per series or study when the
// records are aggregated.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "predict/prediction.h"

namespace mm {

class TableView {
 public:
  // root: the inputs' common folder, which file names are shown relative to; widths: the
  // longest relative path of the listing (capped) and the longest class name.
  TableView(std::FILE* out, std::string root, const std::vector<std::string>& paths,
            std::vector<std::string> class_names);
  void add(const Prediction& p);  // an image's row, or a series/study line (after finish)
  void finish();                  // the per-class counts of the images

 private:
  std::string relative(const std::string& path, int64_t frame, int64_t slice) const;
  std::FILE* out_;
  std::string root_;
  std::vector<std::string> class_names_;
  int path_width_ = 4, class_width_ = 9;
  bool header_done_ = false;
  std::vector<int64_t> counts_;
  int64_t failed_ = 0;
};

}  // namespace mm
