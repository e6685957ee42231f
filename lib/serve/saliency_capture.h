#pragma once
// --saliency-sc: for each classified image, mm-predict's gradient x input
// overlay (the --saliency PNG: the model input beside the same with the heat
// map laid over, enlarged to at least 224 px high) as a DICOM Secondary
// Capture Image (RGB) in the source's study, in a new series per source
// series, referencing the source instance (Source Image Sequence) and marked
// not for clinical use (Image Comments, Derivation Description).
//
// The pipeline writes the PNGs to a work folder as it classifies (the same
// code as mm-predict --saliency, so the pixels are the PNG's); the classifier
// hands each to write() once the image's record is durable. Captures are
// derived results, not part of "nothing lost": a crash before they are
// written loses them, and a restart starts new capture series.
#include <cstdint>
#include <map>
#include <string>

#include "model/medmamba.h"
#include "predict/prediction.h"

namespace mm::serve {

struct SaliencyItem {
  std::string source;  // the classified DICOM file (in done/)
  int64_t frame = -1;  // its 0-based frame; -1: a single-frame instance
  std::string png;     // the overlay the pipeline wrote
  std::string class_name, series_uid;  // the predicted class; the source's series
};

class SaliencyCaptures {
 public:
  // model: the CPU model the backward passes run on; model_name: as the series reports name it.
  SaliencyCaptures(MedMamba& model, const std::string& model_name, const std::string& work_folder,
                   const std::string& out_folder);

  MedMamba& model() { return model_; }
  const std::string& work_folder() const { return work_; }
  // Where the pipeline writes the overlay of record `p`, the inputs named relative to `root`.
  std::string png_of(const std::string& root, const Prediction& p) const;
  // Writes <out>/<SC SOP Instance UID>.dcm (fsync, rename), removes the PNG and
  // returns the capture's path. Throws mm::Error (or ImageError) naming the file.
  std::string write(const SaliencyItem& item);

 private:
  MedMamba& model_;
  std::string model_name_, work_, out_;
  struct CaptureSeries {
    std::string uid;
    int instances = 0;
  };
  std::map<std::string, CaptureSeries> series_;  // by the source's series UID
};

}  // namespace mm::serve
