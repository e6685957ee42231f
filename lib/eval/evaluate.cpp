#include "eval/evaluate.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "predict/pipeline.h"

namespace mm {

std::vector<int64_t> model_class_of_dataset_class(const Dataset& d, const ModelMeta& meta) {
  const int64_t k = meta.config.num_classes;
  std::vector<int64_t> out(size_t(d.num_classes()), -1);
  if (d.labels_are_indices || meta.class_names.empty()) {
    MM_CHECK(d.labels_are_indices || d.num_classes() == k,
             d.source + " has " + std::to_string(d.num_classes()) + " classes, the model " + std::to_string(k) +
                 " (and no class names to match them by)");
    for (int64_t c = 0; c < d.num_classes(); ++c) out[size_t(c)] = c < k ? c : -1;
  } else {
    for (int64_t c = 0; c < d.num_classes(); ++c) {
      const auto it = std::find(meta.class_names.begin(), meta.class_names.end(), d.class_names[size_t(c)]);
      if (it != meta.class_names.end()) out[size_t(c)] = int64_t(it - meta.class_names.begin());
    }
  }
  // Only classes that samples use must match (a split may lack some).
  std::vector<char> used(out.size(), 0);
  for (const Sample& s : d.samples) used[size_t(s.label)] = 1;
  std::string unmatched;
  for (size_t c = 0; c < out.size(); ++c)
    if (used[c] && out[c] < 0) unmatched += (unmatched.empty() ? "" : ", ") + d.class_names[c];
  if (!unmatched.empty()) {
    std::string names;
    for (int64_t c = 0; c < k; ++c) names += (c ? ", " : "") + meta.class_name(c);
    throw Error(d.source + ": classes " + unmatched + " are not among the model's (" + names + ")");
  }
  return out;
}

std::vector<std::string> report_class_names(const Dataset& d, const ModelMeta& meta) {
  std::vector<std::string> names;
  const bool from_dataset = meta.class_names.empty() && !d.labels_are_indices;
  for (int64_t c = 0; c < meta.config.num_classes; ++c)
    names.push_back(from_dataset ? d.class_names[size_t(c)] : meta.class_name(c));
  return names;
}

ScoredSamples run_model_on_dataset(Classifier& classifier, const ModelMeta& meta, const Dataset& d,
                                   const ImageFileReader& read_file, const ModelRunOptions& options) {
  MM_CHECK(options.batch_size >= 1, "batch size must be at least 1");
  const std::vector<int64_t> model_class = model_class_of_dataset_class(d, meta);
  const int64_t n = int64_t(d.samples.size()), k = meta.config.num_classes;

  // mm-predict's pipeline, with the sample index for a path: decoding overlaps the
  // model, and a GPU classifier makes its inputs on the GPU.
  std::vector<InputFile> inputs;
  for (int64_t i = 0; i < n; ++i) inputs.push_back({std::to_string(i), false});
  const ImagesReader read_sample = [&](const std::string& index, const ReadHints& hints) {
    return std::vector<Image>{load_image(d, size_t(std::stoll(index)), read_file, hints)};
  };
  PredictOptions po;
  po.batch_size = options.batch_size;
  po.decode_threads = options.decode_threads;
  po.draft = options.draft;
  if (options.progress)
    po.progress = [&](const PredictProgress& p) { options.progress(p.images_done, n); };

  ScoredSamples out;
  out.num_classes = k;
  out.labels.resize(size_t(n));
  out.probabilities.resize(size_t(n * k));
  int64_t next = 0;
  run_predictions(inputs, read_sample, classifier, meta, po, [&](const Prediction& p) {
    // An unreadable sample stops the evaluation: scores without it would not be the dataset's.
    if (p.status != PredictionStatus::Ok) throw Error(p.error);
    const size_t s = size_t(std::stoll(p.path));
    MM_CHECK(int64_t(s) == next, "mm-eval: records out of order");
    ++next;
    out.labels[s] = model_class[size_t(d.samples[s].label)];
    std::copy(p.probabilities.begin(), p.probabilities.end(), out.probabilities.begin() + int64_t(s) * k);
  });
  MM_CHECK(next == n, "mm-eval: " + std::to_string(n - next) + " samples were not scored");
  return out;
}

}  // namespace mm
