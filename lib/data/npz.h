#pragma once
// NumPy .npy arrays and .npz archives (a zip of .npy files), enough for the
// MedMNIST data sets: little-endian or byte-sized numeric dtypes, C order.
// Every size is checked against the data actually present and a caller-given
// cap before anything is allocated; errors are ImageError naming the file.
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"
#include "io/zip_reader.h"

namespace mm {

struct NpyArray {
  std::string dtype;            // as the header says: "|u1", "<f4", "<i8", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;    // numel * itemsize bytes, little-endian, C order
  int64_t numel() const;
  size_t itemsize() const;
  std::vector<float> to_float() const;
  std::vector<int64_t> to_int64() const;  // integer dtypes only
};

// Parses one .npy file held in memory (format versions 1-3). Accepted dtypes:
// |u1 |i1 |b1 <u2 <i2 <u4 <i4 <u8 <i8 <f4 <f8; fortran_order must be False.
NpyArray parse_npy(const uint8_t* bytes, size_t size, const std::string& what, uint64_t max_bytes = uint64_t(1) << 32);
// The same, keeping `bytes` as the array's data (no copy).
NpyArray parse_npy(std::vector<uint8_t>&& bytes, const std::string& what, uint64_t max_bytes = uint64_t(1) << 32);

class NpzFile {
 public:
  static NpzFile open(const std::string& path);
  std::vector<std::string> names() const;  // array names, without ".npy"
  bool has(const std::string& name) const;
  NpyArray array(const std::string& name, uint64_t max_bytes = uint64_t(1) << 32) const;
  const std::string& path() const { return path_; }

 private:
  NpzFile(ZipReader zip, std::string path) : zip_(std::move(zip)), path_(std::move(path)) {}
  ZipReader zip_;
  std::string path_;
};

// One split of a MedMNIST file: <split>_images is (N,H,W), (N,H,W,3) or
// (N,D,H,W) uint8; <split>_labels is (N,k) integers (k = 1 except multi-label sets).
struct MedmnistSplit {
  std::string path, split;
  int64_t count = 0;
  std::vector<int64_t> item_shape;  // (H,W), (H,W,3) or (D,H,W)
  std::vector<uint8_t> images;      // count * prod(item_shape)
  std::vector<int64_t> labels;      // count * label_columns
  int64_t label_columns = 1;
  bool volumetric() const { return item_shape.size() == 3 && item_shape[2] != 3; }
  int64_t label(int64_t row) const { return labels.at(size_t(row * label_columns)); }
  // Row `row` as an Image (window 0..255). Volumes give slice `slice` along D
  // (the first axis; -1: the middle one, D / 2).
  Image image(int64_t row, int64_t slice = -1) const;
};

// split: "train", "val" or "test".
MedmnistSplit read_medmnist(const std::string& path, const std::string& split, uint64_t max_bytes = uint64_t(1) << 32);
// The same from an archive already open (one read of the file for every split).
MedmnistSplit read_medmnist(const NpzFile& npz, const std::string& split, uint64_t max_bytes = uint64_t(1) << 32);

}  // namespace mm
