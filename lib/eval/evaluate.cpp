#include "eval/evaluate.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <vector>

#include "core/error.h"
#include "data/preprocess.h"

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

void softmax_into(const float* logits, int64_t k, double* probabilities) {
  const double top = *std::max_element(logits, logits + k);
  double sum = 0;
  for (int64_t c = 0; c < k; ++c) sum += probabilities[c] = std::exp(double(logits[c]) - top);
  for (int64_t c = 0; c < k; ++c) probabilities[c] /= sum;
}

ScoredSamples run_model_on_dataset(Model& model, const ModelMeta& meta, const Dataset& d,
                                   const ImageFileReader& read_file, const ModelRunOptions& options) {
  MM_CHECK(options.batch_size >= 1, "batch size must be at least 1");
  const std::vector<int64_t> model_class = model_class_of_dataset_class(d, meta);
  const ModelConfig& cfg = model.config();
  const int64_t n = int64_t(d.samples.size()), k = cfg.num_classes, side = meta.preprocess.input_size;
  MM_CHECK(side == cfg.image_size && int64_t(meta.preprocess.mean.size()) == cfg.in_chans,
           "model preprocessing (" + std::to_string(side) + " px, " + std::to_string(meta.preprocess.mean.size()) +
               " channels) disagrees with its config (" + std::to_string(cfg.image_size) + " px, " +
               std::to_string(cfg.in_chans) + " channels)");

  ScoredSamples out;
  out.num_classes = k;
  out.labels.resize(size_t(n));
  out.probabilities.resize(size_t(n * k));
  const int64_t item = cfg.in_chans * side * side;
  for (int64_t start = 0; start < n; start += options.batch_size) {
    const int64_t b = std::min(options.batch_size, n - start);
    Tensor batch = Tensor::empty({b, cfg.in_chans, side, side});
    // The batch's images are decoded and preprocessed in parallel (the readers are
    // thread-safe: mm-train's cache reads with them the same way); the first failure in
    // sample order is the one reported.
    std::vector<std::exception_ptr> failed(static_cast<size_t>(b));
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < b; ++i) {
      try {
        preprocess_into(load_image(d, size_t(start + i), read_file), meta.preprocess, batch.f32() + i * item);
      } catch (...) {
        failed[size_t(i)] = std::current_exception();
      }
    }
    for (const std::exception_ptr& e : failed)
      if (e) std::rethrow_exception(e);
    for (int64_t i = 0; i < b; ++i) {
      const size_t s = size_t(start + i);
      out.labels[s] = model_class[size_t(d.samples[s].label)];
    }
    const Tensor logits = options.logits ? options.logits(batch) : model.forward(batch, /*train=*/false);
    for (int64_t i = 0; i < b; ++i)
      softmax_into(logits.f32() + i * k, k, out.probabilities.data() + (start + i) * k);
    if (options.progress) options.progress(start + b, n);
  }
  return out;
}

}  // namespace mm
