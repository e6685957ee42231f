#include "train/run_files.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/durable_file.h"
#include "io/json_text.h"

namespace mm {

using json = nlohmann::ordered_json;

std::string epoch_record_json(const EpochRecord& r) {
  json j{{"epoch", r.epoch}, {"step", r.step}, {"lr", r.lr}, {"train_loss", r.train_loss},
         {"train_accuracy", r.train_accuracy}};
  auto opt = [&](const char* key, const std::optional<double>& v) { j[key] = v ? json(*v) : json(nullptr); };
  opt("val_loss", r.val_loss);
  opt("val_accuracy", r.val_accuracy);
  opt("val_balanced_accuracy", r.val_balanced_accuracy);
  opt("val_auc", r.val_auc);
  j["best"] = r.best;
  j["images_per_second"] = r.images_per_second;
  j["seconds"] = r.seconds;
  return json_text(j);
}

EpochRecord epoch_record_from_json(const std::string& line) {
  const json j = json::parse(line);
  EpochRecord r;
  r.epoch = j.at("epoch"); r.step = j.at("step"); r.lr = j.at("lr");
  r.train_loss = j.at("train_loss"); r.train_accuracy = j.at("train_accuracy");
  auto opt = [&](const char* key, std::optional<double>& v) {
    if (j.contains(key) && !j.at(key).is_null()) v = j.at(key).get<double>();
  };
  opt("val_loss", r.val_loss);
  opt("val_accuracy", r.val_accuracy);
  opt("val_balanced_accuracy", r.val_balanced_accuracy);
  opt("val_auc", r.val_auc);
  r.best = j.value("best", false);
  r.images_per_second = j.value("images_per_second", 0.0);
  r.seconds = j.value("seconds", 0.0);
  return r;
}

std::vector<EpochRecord> read_metrics_file(const std::string& path) {
  std::vector<EpochRecord> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) {
    if (line.empty()) continue;
    try {
      out.push_back(epoch_record_from_json(line));
    } catch (const std::exception&) {
      break;  // a torn line can only be the last one written
    }
  }
  return out;
}

void write_metrics_file(const std::string& path, const std::vector<EpochRecord>& records, CommitQueue* later) {
  std::string text;
  for (const EpochRecord& r : records) text += epoch_record_json(r) + "\n";
  durable_replace(path, text, later);
}

namespace {

struct Series {
  std::string name, colour;
  std::vector<std::pair<double, double>> points;  // (epoch, value)
};

// One panel: axes, ticks, a polyline per series and a legend, inside (x0, y0, w, h).
void draw_panel(std::ostringstream& svg, double x0, double y0, double w, double h, const std::string& title,
                const std::vector<Series>& series, double lo, double hi, int64_t epochs) {
  const double px = x0 + 50, py = y0 + 30, pw = w - 70, ph = h - 70;
  auto X = [&](double e) { return px + (epochs > 1 ? (e - 1) / double(epochs - 1) : 0.5) * pw; };
  auto Y = [&](double v) { return py + ph - (hi > lo ? (v - lo) / (hi - lo) : 0.5) * ph; };
  svg << "<text x='" << x0 + w / 2 << "' y='" << y0 + 18 << "' text-anchor='middle' font-weight='bold'>" << title
      << "</text>\n<rect x='" << px << "' y='" << py << "' width='" << pw << "' height='" << ph
      << "' fill='none' stroke='#888'/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double v = lo + (hi - lo) * i / 4;
    svg << "<text x='" << px - 6 << "' y='" << Y(v) + 4 << "' text-anchor='end' font-size='11'>" << std::setprecision(3)
        << v << "</text>\n";
  }
  svg << "<text x='" << px << "' y='" << py + ph + 16 << "' font-size='11'>1</text><text x='" << px + pw
      << "' y='" << py + ph + 16 << "' font-size='11' text-anchor='end'>" << epochs << "</text><text x='"
      << px + pw / 2 << "' y='" << py + ph + 30 << "' font-size='11' text-anchor='middle'>epoch</text>\n";
  double ly = py + 14;
  for (const Series& s : series) {
    if (s.points.empty()) continue;
    svg << "<polyline fill='none' stroke='" << s.colour << "' stroke-width='2' points='";
    for (const auto& [e, v] : s.points) svg << X(e) << "," << Y(v) << " ";
    svg << "'/>\n<text x='" << px + pw - 4 << "' y='" << ly << "' text-anchor='end' font-size='11' fill='"
        << s.colour << "'>" << s.name << "</text>\n";
    ly += 14;
  }
}

}  // namespace

std::string training_curves_svg(const std::vector<EpochRecord>& records) {
  Series train_loss{"train loss", "#1f77b4", {}}, val_loss{"val loss", "#ff7f0e", {}};
  Series train_acc{"train accuracy", "#1f77b4", {}}, val_acc{"val accuracy", "#ff7f0e", {}},
      val_bacc{"val balanced accuracy", "#2ca02c", {}}, val_auc{"val AUC", "#d62728", {}};
  double loss_hi = 0;
  int64_t epochs = 1;
  for (const EpochRecord& r : records) {
    const double e = double(r.epoch);
    epochs = std::max(epochs, r.epoch);
    auto add = [&](Series& s, double v) {
      if (std::isfinite(v)) s.points.push_back({e, v});
    };
    add(train_loss, r.train_loss);
    add(train_acc, r.train_accuracy);
    if (r.val_loss) add(val_loss, *r.val_loss);
    if (r.val_accuracy) add(val_acc, *r.val_accuracy);
    if (r.val_balanced_accuracy) add(val_bacc, *r.val_balanced_accuracy);
    if (r.val_auc) add(val_auc, *r.val_auc);
    for (const Series* s : {&train_loss, &val_loss})
      if (!s->points.empty()) loss_hi = std::max(loss_hi, s->points.back().second);
  }
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='900' height='340' font-family='sans-serif'>\n"
      << "<rect width='900' height='340' fill='white'/>\n";
  draw_panel(svg, 0, 0, 450, 340, "Loss", {train_loss, val_loss}, 0, loss_hi > 0 ? loss_hi * 1.05 : 1, epochs);
  draw_panel(svg, 450, 0, 450, 340, "Accuracy and AUC", {train_acc, val_acc, val_bacc, val_auc}, 0, 1, epochs);
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace mm
