#pragma once
// Labelled image datasets, for evaluation (mm-eval) and training:
//   - an image folder with one sub-folder per class, optionally under split
//     folders (train/val/test, or Training/Testing as the brain-tumour MRI set has);
//   - a CSV manifest `path,label[,split]`;
//   - a MedMNIST .npz (train/val/test image and label arrays).
// A dataset lists samples (an id, the file to read, a label, a split); pixels
// come from load_image, which reads files through a reader the caller passes
// (the DICOM/NIfTI/picture readers live in lib/imaging, which the core library
// does not link) and produces in-memory arrays itself.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/npz.h"

namespace mm {

struct Sample {
  std::string id;      // how reports name it: the path relative to the folder, as the manifest
                       // writes it, or "<file.npz>:<split>:<row>"
  std::string file;    // what to read; empty for samples held in memory
  int64_t label = -1;  // index into Dataset::class_names
  std::string split;   // canonical split name ("train", "val", "test") or ""
  int array = -1;      // in-memory samples: which of Dataset::arrays holds the image
  int64_t row = -1;    // ... and its row there (3-D MedMNIST rows give their middle slice)
};

struct Dataset {
  std::string source;                    // what was opened
  std::string kind;                      // "folder", "csv", "npz"
  std::vector<std::string> class_names;  // label index -> name
  // Labels were written as integers (MedMNIST, a numeric CSV): class_names are
  // "0", "1", ... and a model's own names should be shown instead.
  bool labels_are_indices = false;
  std::vector<std::string> splits;  // the splits the source has (canonical names); empty: none
  std::string split;                // the split these samples are from; "" when all
  std::vector<Sample> samples;
  int64_t excluded = 0;  // samples the exclude list removed
  int64_t skipped = 0;   // files in class folders that are not images (by content)
  std::vector<std::shared_ptr<const MedmnistSplit>> arrays;  // in-memory images (Sample::array)

  int64_t num_classes() const { return int64_t(class_names.size()); }
};

struct DatasetOptions {
  // Which split to take: "train", "val" or "test", with their aliases
  // (training, valid, validation, testing; any case). Empty: every sample.
  // Sources without splits ignore it (Dataset::split stays "").
  std::string split;
  // A text file of sample ids to leave out, one per line, relative to the folder
  // root (e.g. brain-tumor-mri/test-duplicates-of-train.txt); '#' starts a
  // comment. An entry naming no file under the root is an error (wrong root).
  std::string exclude_file;
};

// Chooses the kind from the path: a directory, a .csv file or a .npz file.
Dataset open_dataset(const std::string& path, const DatasetOptions& options = {});
// Gives the classes of data whose labels are indices (MedMNIST, a numeric CSV) these
// names, in label order. Throws mm::Error when the data names its own classes (folders,
// CSV label names), or for a wrong count, an empty or a repeated name.
void name_index_classes(Dataset& d, const std::vector<std::string>& names);
Dataset open_image_folder(const std::string& root, const DatasetOptions& options = {});
// Paths relative to the manifest's folder. Labels are class names (classes
// sorted by name, as torchvision's ImageFolder sorts folders) or, when every
// label is a non-negative integer, class indices.
Dataset open_csv_manifest(const std::string& path, const DatasetOptions& options = {});
// MedMNIST: integer labels; no exclude list. Every split when options.split is empty.
Dataset open_npz_dataset(const std::string& path, const DatasetOptions& options = {});

// "train", "val", "test" for a split folder or column name and its aliases; "" otherwise.
std::string canonical_split(const std::string& name);

// Reads the image of a file sample (one 2-D image; a reader returning several
// frames or slices should throw). The DICOM/NIfTI/picture readers provide one.
using ImageFileReader = std::function<Image(const std::string& file, const ReadHints& hints)>;
Image load_image(const Dataset& d, size_t sample_index, const ImageFileReader& read_file, const ReadHints& hints = {});

}  // namespace mm
