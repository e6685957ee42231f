#include "eval/report_json.h"

#include <fstream>

#include "core/error.h"
#include "io/json_text.h"

namespace mm {

namespace {

using ojson = nlohmann::ordered_json;

ojson value_or_null(const std::optional<double>& v) { return v ? ojson(*v) : ojson(nullptr); }

ojson scores_json(const ClassScores& s) {
  return ojson{{"precision", s.precision},
               {"recall", s.recall},
               {"specificity", s.specificity},
               {"f1", s.f1},
               {"auc", value_or_null(s.auc)}};
}

// The intervals, nested like the metrics: "per_class.2.auc" -> ci.per_class.<name>.auc.
ojson intervals_json(const BootstrapResult& b, const std::vector<std::string>& class_names) {
  ojson ci{{"method", "percentile"}, {"level", b.level}, {"resamples", b.resamples}, {"seed", b.seed}};
  for (const auto& [name, interval] : b.intervals) {
    const ojson value = interval ? ojson::array({interval->low, interval->high}) : ojson(nullptr);
    const size_t dot = name.find('.');
    if (dot == std::string::npos) {
      ci[name] = value;
      continue;
    }
    const std::string group = name.substr(0, dot), rest = name.substr(dot + 1);
    if (group == "per_class") {
      const size_t dot2 = rest.find('.');
      ci[group][class_names.at(std::stoul(rest.substr(0, dot2)))][rest.substr(dot2 + 1)] = value;
    } else {
      ci[group][rest] = value;
    }
  }
  return ci;
}

}  // namespace

nlohmann::ordered_json evaluation_json(const Evaluation& e) {
  const Metrics& m = e.metrics;
  ojson j;
  j["n"] = m.n;
  j["num_classes"] = e.class_names.size();
  j["class_names"] = e.class_names;
  j["accuracy"] = m.accuracy;
  j["balanced_accuracy"] = m.balanced_accuracy;
  j["kappa"] = value_or_null(m.kappa);
  j["ece"] = m.ece;
  j["ece_bins"] = m.ece_bins;
  j["top_k"] = ojson::object();
  for (const auto& [k, acc] : m.top_k) j["top_k"][std::to_string(k)] = acc;
  j["macro"] = scores_json(m.macro);
  j["per_class"] = ojson::object();
  for (size_t c = 0; c < e.class_names.size(); ++c) {
    ojson entry = scores_json(m.per_class[c]);
    entry["support"] = m.support[c];
    j["per_class"][e.class_names[c]] = entry;
  }
  j["confusion_matrix"] = m.confusion_matrix;
  if (e.bootstrap) j["ci"] = intervals_json(*e.bootstrap, e.class_names);
  j["about"] = ojson::object();
  for (const auto& [key, value] : e.about) j["about"][key] = value;
  return j;
}

void write_json_report(const std::string& path, const Evaluation& e) {
  std::ofstream out(path);
  MM_CHECK(out.good(), path + ": cannot write the JSON report");
  out << json_text(evaluation_json(e), 2) << "\n";
  out.close();
  MM_CHECK(out.good(), path + ": write error");
}

}  // namespace mm
