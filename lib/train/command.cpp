#include "train/command.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace mm {

namespace {

std::string optional_value(const char* name, const std::optional<double>& v) {
  char buf[64];
  if (!v) return "";
  std::snprintf(buf, sizeof buf, "  %s %.4f", name, *v);
  return buf;
}

std::string duration(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", int(s / 3600), int(s / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", int(s / 60), int(s) % 60);
  return buf;
}

}  // namespace

int run_train_command(const TrainOptions& options, const TrainControl& control, bool quiet,
                      const ImageFileReader& read_file) {
  // In a data-parallel run rank 0 reports (train_model gives the events to it alone); the
  // others print only their errors, named by rank.
  const int rank = control.comm ? control.comm->rank() : 0;
  const std::string who = rank > 0 ? "mm-train: rank " + std::to_string(rank) + ": " : "mm-train: ";
  quiet = quiet || rank > 0;
  const bool tty = isatty(fileno(stderr)) && !quiet;
  bool bar_drawn = false;
  auto last_draw = std::chrono::steady_clock::now();
  auto clear_bar = [&] {
    if (bar_drawn) std::fputs("\r\033[K", stderr);
    bar_drawn = false;
  };
  TrainEvents ev;
  ev.note = [&](const std::string& s) {
    if (quiet) return;
    clear_bar();
    std::fprintf(stderr, "mm-train: %s\n", s.c_str());
  };
  if (tty)
    ev.batch = [&](const BatchProgress& p) {
      const auto now = std::chrono::steady_clock::now();
      if (bar_drawn && p.batch < p.batches && now - last_draw < std::chrono::milliseconds(100)) return;
      last_draw = now;
      const int width = 24, filled = int(width * p.batch / std::max<int64_t>(p.batches, 1));
      std::fprintf(stderr, "\repoch %lld/%lld [%s%s] %lld/%lld  loss %.4f  acc %.3f  %.1f img/s  ETA %s \033[K",
                   (long long)p.epoch, (long long)p.epochs, std::string(size_t(filled), '#').c_str(),
                   std::string(size_t(width - filled), ' ').c_str(), (long long)p.batch, (long long)p.batches,
                   p.loss, p.accuracy, p.images_per_second, duration(p.eta_seconds).c_str());
      std::fflush(stderr);
      bar_drawn = true;
    };
  ev.epoch_end = [&](const EpochRecord& r) {
    clear_bar();
    std::fprintf(stderr, "epoch %lld  lr %.2e  train loss %.4f acc %.4f%s%s%s%s  %.1f img/s  %s%s\n",
                 (long long)r.epoch, r.lr, r.train_loss, r.train_accuracy, optional_value("val loss", r.val_loss).c_str(),
                 optional_value("acc", r.val_accuracy).c_str(),
                 optional_value("bal.acc", r.val_balanced_accuracy).c_str(), optional_value("AUC", r.val_auc).c_str(),
                 r.images_per_second, duration(r.seconds).c_str(), r.best ? "  *best" : "");
  };
  try {
    const TrainResult res = train_model(options, control, read_file, ev);
    clear_bar();
    if (rank > 0) return kTrainOk;
    if (res.unreadable > 0)
      std::fprintf(stderr, "mm-train: %lld unreadable samples were skipped (listed above)\n", (long long)res.unreadable);
    if (res.test_accuracy)
      std::fprintf(stderr, "mm-train: best model on the test split: accuracy %.4f%s (test_metrics.json)\n",
                   *res.test_accuracy, optional_value("AUC", res.test_auc).c_str());
    if (!quiet) std::fprintf(stderr, "mm-train: %lld epochs done; models in %s\n", (long long)res.epochs_done,
                             options.out.c_str());
    return kTrainOk;
  } catch (const TrainRefused& e) {
    clear_bar();
    std::fprintf(stderr, "%s%s\n", who.c_str(), e.what());
    return kTrainUsage;
  } catch (const TooManyUnreadable& e) {
    clear_bar();
    std::fprintf(stderr, "%s%s\n", who.c_str(), e.what());
    return kTrainUnreadable;
  } catch (const LossNotFinite& e) {
    clear_bar();
    std::fprintf(stderr, "%s%s\n", who.c_str(), e.what());
    return kTrainNotFinite;
  }
}

}  // namespace mm
