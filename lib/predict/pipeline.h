#pragma once
// mm-predict's pipeline: files -> images -> model inputs -> batches -> logits ->
// records, in input order.
//
//   decode threads (options.decode_threads): each claims the next file in
//     order, reads it (every frame / slice), preprocesses each image into a
//     model input, and writes --save-preprocessed arrays; between files, it
//     copies model inputs into batch rows (predict/row_copies.h);
//   the calling thread: takes decoded files in input order, assigns their
//     images to batch rows, runs the model (CPU or GPU) and saliency, and hands
//     records to `sink` in input order (files in the given order, frames and
//     slices in index order).
//
// With a GPU classifier (and options.preprocess_on_gpu), the decode threads
// only read files; their pixels go to the GPU as they are (predict/gpu_batches.h),
// and the calling thread fills one batch while the GPU runs the previous one.
//
// Decoding overlaps inference. Memory stays bounded: a thread claims a new file
// only while fewer than `images_ahead` decoded images wait for the model (or
// when the file is the very next one needed), so at most images_ahead plus one
// file per thread are held beyond the batch itself.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/input_stages.h"
#include "model/medmamba.h"
#include "model/model_file.h"
#include "predict/classifier.h"
#include "predict/inputs.h"
#include "predict/prediction.h"

namespace mm {

// Reads every image of a file (frames, slices, pages), throwing ImageError
// (kind NoImage for files without pixel data) or mm::Error. Called from several
// threads at once.
using ImagesReader = std::function<std::vector<Image>(const std::string& path, const ReadHints& hints)>;

struct PredictProgress {
  int64_t files_done = 0, files_total = 0, images_done = 0;
};

struct PredictOptions {
  int64_t batch_size = 16;
  int decode_threads = 1;
  int64_t images_ahead = 0;  // 0: 4 batches
  bool logits = false;       // fill Prediction::logits
  // Where derived files go ("" = none), named by derived_file_name() relative to derived_root.
  std::string save_preprocessed_dir;  // model inputs as float32 (C,S,S) .npy
  std::string saliency_dir;           // gradient x input overlays as PNG (needs saliency_model)
  std::string derived_root;
  MedMamba* saliency_model = nullptr;  // the CPU model: the GPU backend has no backward pass
  // With a GPU classifier, window, resize and normalise on the GPU (GpuBatches) and keep two
  // batches in flight; not with save_preprocessed_dir or saliency_dir, which need the inputs
  // on the CPU. The model inputs agree with the CPU's to about a float ulp.
  bool preprocess_on_gpu = true;
  // Draft decoding: readers are asked for images no smaller than the model's input
  // (ReadHints::draft_side), which JPEG and JPEG 2000 decode several times faster.
  bool draft = false;
  // Called on the calling thread as files are taken and batches finish.
  std::function<void(const PredictProgress&)> progress;
  // Files found under folders whose content is no image format: skipped, no record.
  std::function<void(const std::string& path)> skipped;
  // A file read with a note from its reader (Image::warning: e.g. a NIfTI whose
  // sform was unusable, oriented from its qform); its records are written as usual.
  std::function<void(const std::string& path, const std::string& warning)> warning;
};

// Seconds. Reading and preparing are summed over the decode threads (thread
// time); the rest is the calling thread's wall time.
struct PredictTiming {
  double wall = 0;
  double reading = 0;    // decoding files into images
  double preparing = 0;  // preprocessing into model inputs (and writing .npy)
  // The same as the decode threads' CPU time (without the time they waited
  // for a core), and that CPU time per stage (InputStage) where a reader or
  // preprocessing says which stage it is in.
  double reading_cpu = 0, preparing_cpu = 0;
  InputStageTimes stages;
  double batching = 0;   // waiting for (and doing) the copies of model inputs into the batch
  double model = 0;      // the forward passes, transfers included
  double waiting = 0;    // the calling thread idle, waiting for decoded files
  double saliency = 0;   // backward passes and PNGs
  double output = 0;     // in the sink
};

struct PredictSummary {
  int64_t files = 0;           // inputs given
  int64_t images = 0;          // classified
  int64_t failed_files = 0;    // status failed
  int64_t no_image_files = 0;  // status no_image
  int64_t skipped_files = 0;   // found in folders, not an image format
  int decode_threads = 0;
  bool inputs_on_gpu = false;  // window, resize and normalisation ran on the GPU (GpuBatches)
  PredictTiming timing;
};

// Throws mm::Error for what stops the run (the model failing, an output that
// cannot be written); a file that cannot be read or preprocessed becomes a
// Failed record and the run goes on.
PredictSummary run_predictions(const std::vector<InputFile>& files, const ImagesReader& read,
                               Classifier& classifier, const ModelMeta& meta, const PredictOptions& options,
                               const std::function<void(const Prediction&)>& sink);

// CPUs this process may run on (a Slurm job's allocation, taskset), not the machine's.
int available_cpus();

// Exit codes (docs/mm-predict.md), in the spirit of DCMTK's and dcm2niix's.
enum ExitCode : int {
  kExitOk = 0,                 // every input classified (or holding no image: SR, RTSTRUCT, ...)
  kExitFatal = 1,              // the run could not start or finish: model, output, device
  kExitUsage = 2,              // bad command line
  kExitSomeFailed = 3,         // some inputs failed; the others were classified
  kExitNothingClassified = 4,  // no image was classified (no inputs, all failed, or none held an image)
};
ExitCode exit_code_of(const PredictSummary& s);

}  // namespace mm
