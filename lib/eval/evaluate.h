#pragma once
// Runs a model over a labelled dataset: the `mm-eval --model M --data D` path.
//   dataset sample -> image (load_image) -> mm-predict's pipeline (preprocess,
//   batch, the classifier, softmax) -> ScoredSamples
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "eval/metrics.h"
#include "model/model_file.h"
#include "predict/classifier.h"
#include "predict/prediction.h"  // softmax_into

namespace mm {

// The model's class index for each of the dataset's classes:
//   - integer labels (MedMNIST, numeric CSV) are model class indices;
//   - named labels are looked up among the model's class names;
//   - a model without class names takes the dataset's classes in their
//     (sorted, ImageFolder) order, which needs the same number of classes.
// Throws mm::Error naming the classes that do not match.
std::vector<int64_t> model_class_of_dataset_class(const Dataset& d, const ModelMeta& meta);

// Class names for reports: the model's, or the dataset's when the model has none
// and the dataset's are names.
std::vector<std::string> report_class_names(const Dataset& d, const ModelMeta& meta);

struct ModelRunOptions {
  int64_t batch_size = 16;
  int decode_threads = 1;  // threads reading and preprocessing samples while the model runs
  bool draft = false;      // JPEG and JPEG 2000 decoded at a reduced size no smaller than the model's input
  // Called as batches finish with (samples done, total).
  std::function<void(int64_t, int64_t)> progress;
};

// Softmax probabilities for every sample of d, in dataset order; labels mapped to the
// model's classes. Runs mm-predict's pipeline (predict/pipeline.h) with the classifier
// (any backend and precision). An unreadable image is an error naming the file.
ScoredSamples run_model_on_dataset(Classifier& classifier, const ModelMeta& meta, const Dataset& d,
                                   const ImageFileReader& read_file, const ModelRunOptions& options = {});

}  // namespace mm
