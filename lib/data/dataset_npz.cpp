#include "core/error.h"
#include "data/dataset.h"

namespace mm {

// Placeholder until the readers' npz reader (lib/data/npz.h) lands.
Dataset open_npz_dataset(const std::string& path, const DatasetOptions&) {
  throw Error(path + ": MedMNIST .npz datasets are not supported yet");
}

}  // namespace mm
