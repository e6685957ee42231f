#pragma once
// One record of mm-predict's output: a classified image (a DICOM frame, a NIfTI
// slice, a picture), an input that could not be classified, or a mean over a
// DICOM series or study. docs/mm-predict.md lists the fields as written.
#include <cstdint>
#include <string>
#include <vector>

namespace mm {

enum class PredictionLevel { Image, Series, Study };
const char* prediction_level_name(PredictionLevel level);  // "image", "series", "study"

enum class PredictionStatus {
  Ok,       // classified
  NoImage,  // a valid file without pixel data (DICOM SR, RTSTRUCT, RTPLAN, ...): not classified, not a failure
  Failed    // unreadable, corrupt, unsupported, ...
};
const char* prediction_status_name(PredictionStatus status);  // "ok", "no_image", "failed"

struct Prediction {
  PredictionLevel level = PredictionLevel::Image;
  PredictionStatus status = PredictionStatus::Ok;
  // Image records: the input file. Aggregates: "studies/<uid>/series/<uid>" or
  // "studies/<uid>" (DICOMweb's resource paths), which name no file, so that
  // tools joining records on paths (mm-eval) never mistake one for an image.
  std::string path;
  int64_t frame = -1;  // DICOM multi-frame: 0-based frame; -1 otherwise
  int64_t slice = -1;  // NIfTI: 0-based slice along the slicing axis; -1 otherwise
  std::string study_uid, series_uid, sop_uid;
  int64_t class_index = -1;           // argmax of probabilities (the first on ties); -1 unless Ok
  std::vector<double> probabilities;  // one per class; empty unless Ok
  std::vector<float> logits;          // image records, when asked for
  int64_t images = 0;                 // aggregates: how many image records the mean is over
  std::string error;                  // NoImage / Failed: "<kind>: <reason>"
};

// Index of the largest value, the first one on ties (numpy.argmax).
int64_t argmax(const std::vector<double>& values);

// Softmax of one row of k logits, in double.
void softmax_into(const float* logits, int64_t k, double* probabilities);

}  // namespace mm
