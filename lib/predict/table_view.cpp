#include "predict/table_view.h"

#include <algorithm>

#include "predict/inputs.h"

namespace mm {

namespace {
constexpr int kMaxPathWidth = 72;  // longer paths keep their tail
}

TableView::TableView(std::FILE* out, std::string root, const std::vector<std::string>& paths,
                     std::vector<std::string> class_names)
    : out_(out), root_(std::move(root)), class_names_(std::move(class_names)), counts_(class_names_.size(), 0) {
  for (const std::string& p : paths) path_width_ = std::max(path_width_, int(relative(p, -1, -1).size()));
  path_width_ = std::min(path_width_, kMaxPathWidth);
  for (const std::string& c : class_names_) class_width_ = std::max(class_width_, int(c.size()));
}

std::string TableView::relative(const std::string& path, int64_t frame, int64_t slice) const {
  std::string r = derived_file_name(root_, path, frame, slice, "");  // the names --saliency files get
  if (int(r.size()) > kMaxPathWidth) r = "..." + r.substr(r.size() - size_t(kMaxPathWidth - 3));
  return r;
}

void TableView::add(const Prediction& p) {
  if (p.level != PredictionLevel::Image) {  // a series or study: the mean over its images
    if (p.status != PredictionStatus::Ok) return;
    const std::string uid = p.level == PredictionLevel::Series ? p.series_uid : p.study_uid;
    std::fprintf(out_, "%s %s (%lld images): %s %.3f\n", p.level == PredictionLevel::Series ? "series" : "study",
                 uid.c_str(), (long long)p.images, class_names_[size_t(p.class_index)].c_str(),
                 p.probabilities[size_t(p.class_index)]);
    return;
  }
  if (!header_done_) {
    std::fprintf(out_, "%-*s  %-*s  %s\n", path_width_, "file", class_width_, "predicted", "probability");
    header_done_ = true;
  }
  const std::string name = relative(p.path, p.frame, p.slice);
  if (p.status == PredictionStatus::Ok) {
    std::fprintf(out_, "%-*s  %-*s  %.3f\n", path_width_, name.c_str(), class_width_,
                 class_names_[size_t(p.class_index)].c_str(), p.probabilities[size_t(p.class_index)]);
    ++counts_[size_t(p.class_index)];
  } else if (p.status == PredictionStatus::Failed) {
    std::fprintf(out_, "%-*s  %s\n", path_width_, name.c_str(), ("not classified: " + p.error).c_str());
    ++failed_;
  }
}

void TableView::finish() {
  std::string line;
  for (size_t c = 0; c < counts_.size(); ++c)
    if (counts_[c] > 0) line += (line.empty() ? "" : ", ") + class_names_[c] + " " + std::to_string(counts_[c]);
  if (failed_ > 0) line += (line.empty() ? "" : ", ") + std::string("not classified ") + std::to_string(failed_);
  std::fprintf(out_, "predicted: %s\n", line.empty() ? "nothing" : line.c_str());
  std::fflush(out_);
}

}  // namespace mm
