#pragma once
// A series' result as a DICOM Comprehensive SR (DCMTK dcmsr): the predicted
// class and every class's mean probability (mm-predict's `--aggregate series`
// record), the number of images, the model's name and version, a "not for
// clinical use" note, and references to the classified instances (IMAGE
// items and the Current Requested Procedure Evidence Sequence). The SR joins
// the source study as a new series; patient and study attributes are copied
// from the first source instance.
#include <string>
#include <vector>

#include "predict/prediction.h"

namespace mm::serve {

struct SeriesResult {
  Prediction aggregate;              // level Series, probabilities = means, images = count
  std::vector<std::string> members;  // the classified files (in done/), in arrival order, one per SOP instance
};

struct ReportModel {
  std::vector<std::string> class_names;
  std::string name;  // shown as the model, e.g. "brain-mri-224.safetensors (4 classes, 224 px)"
};

// Writes <folder>/<SR SOP Instance UID>.dcm through a temporary name (fsync,
// rename) and returns its path. Throws mm::Error naming the file on failure.
std::string write_series_report(const SeriesResult& series, const ReportModel& model, const std::string& folder);

}  // namespace mm::serve
