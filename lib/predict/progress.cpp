#include "predict/progress.h"

#include <string>

namespace mm {

void ProgressBar::update(const PredictProgress& p) {
  const auto now = std::chrono::steady_clock::now();
  const bool done = p.files_done == p.files_total;
  if (drawn_ && !done && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  drawn_ = true;
  const int width = 30;
  const int filled = p.files_total > 0 ? int(width * p.files_done / p.files_total) : width;
  const double seconds = std::chrono::duration<double>(now - start_).count();
  std::fprintf(out_, "\r[%s%s] %lld/%lld files, %lld images, %.1f images/s ", std::string(size_t(filled), '#').c_str(),
               std::string(size_t(width - filled), ' ').c_str(), (long long)p.files_done, (long long)p.files_total,
               (long long)p.images_done, seconds > 0 ? double(p.images_done) / seconds : 0.0);
  std::fflush(out_);
}

void ProgressBar::clear() {
  if (drawn_) std::fputs("\r\033[K", out_);
  drawn_ = false;
}

void ProgressBar::finish() {
  if (drawn_) std::fputc('\n', out_);
  drawn_ = false;
}

}  // namespace mm
