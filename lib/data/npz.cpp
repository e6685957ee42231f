#include "data/npz.h"

#include <cstring>

namespace mm {

using Kind = ImageError::Kind;

namespace {

size_t dtype_itemsize(const std::string& d) {
  static const char* one[] = {"|u1", "|i1", "|b1", "<u1", "<i1"};
  for (const char* s : one)
    if (d == s) return 1;
  if (d == "<u2" || d == "<i2") return 2;
  if (d == "<u4" || d == "<i4" || d == "<f4") return 4;
  if (d == "<u8" || d == "<i8" || d == "<f8") return 8;
  return 0;
}

// The value of `key` in the header dict: the text up to the next top-level ',' or '}'.
std::string dict_value(const std::string& header, const std::string& key, const std::string& what) {
  const size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) throw ImageError(Kind::Corrupt, what, "npy header without '" + key + "'");
  size_t p = header.find(':', k);
  if (p == std::string::npos) throw ImageError(Kind::Corrupt, what, "npy header: no value for '" + key + "'");
  ++p;
  while (p < header.size() && header[p] == ' ') ++p;
  int depth = 0;
  size_t e = p;
  for (; e < header.size(); ++e) {
    const char c = header[e];
    if (c == '(' || c == '[') ++depth;
    if (c == ')' || c == ']') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
  }
  std::string v = header.substr(p, e - p);
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return v;
}

std::vector<int64_t> parse_shape(const std::string& v, const std::string& what) {
  if (v.size() < 2 || v.front() != '(' || v.back() != ')') throw ImageError(Kind::Corrupt, what, "npy shape " + v);
  std::vector<int64_t> shape;
  int64_t cur = -1;
  for (size_t i = 1; i + 1 < v.size(); ++i) {
    const char c = v[i];
    if (c >= '0' && c <= '9') {
      cur = (cur < 0 ? 0 : cur) * 10 + (c - '0');
      if (cur > (int64_t(1) << 40)) throw ImageError(Kind::Corrupt, what, "npy shape too large: " + v);
    } else if (c == ',') {
      if (cur < 0) throw ImageError(Kind::Corrupt, what, "npy shape " + v);
      shape.push_back(cur), cur = -1;
    } else if (c != ' ' && c != 'L') {
      throw ImageError(Kind::Corrupt, what, "npy shape " + v);
    }
  }
  if (cur >= 0) shape.push_back(cur);
  if (shape.size() > 8) throw ImageError(Kind::Unsupported, what, "npy array of " + std::to_string(shape.size()) + " dimensions");
  return shape;
}

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // little-endian data on a little-endian host
  return v;
}

template <class Out>
std::vector<Out> convert(const NpyArray& a) {
  std::vector<Out> out(size_t(a.numel()));
  const std::string& d = a.dtype;
  const uint8_t* p = a.data.data();
  for (size_t i = 0; i < out.size(); ++i) {
    if (d[2] == '1') out[i] = d[1] == 'i' ? Out(int8_t(p[i])) : Out(p[i]);
    else if (d == "<u2") out[i] = Out(load<uint16_t>(p + 2 * i));
    else if (d == "<i2") out[i] = Out(load<int16_t>(p + 2 * i));
    else if (d == "<u4") out[i] = Out(load<uint32_t>(p + 4 * i));
    else if (d == "<i4") out[i] = Out(load<int32_t>(p + 4 * i));
    else if (d == "<u8") out[i] = Out(load<uint64_t>(p + 8 * i));
    else if (d == "<i8") out[i] = Out(load<int64_t>(p + 8 * i));
    else if (d == "<f4") out[i] = Out(load<float>(p + 4 * i));
    else out[i] = Out(load<double>(p + 8 * i));
  }
  return out;
}

}  // namespace

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t NpyArray::itemsize() const { return dtype_itemsize(dtype); }
std::vector<float> NpyArray::to_float() const { return convert<float>(*this); }
std::vector<int64_t> NpyArray::to_int64() const {
  if (dtype[1] == 'f') throw Error("npy: float array where integers were expected");
  return convert<int64_t>(*this);
}

namespace {

// The header's dtype and shape, checked against max_bytes and the bytes present;
// a.data stays empty. *data_at and *data_bytes say where the array lies.
NpyArray parse_npy_header(const uint8_t* bytes, size_t size, const std::string& what, uint64_t max_bytes,
                          size_t* data_at_out, size_t* data_bytes_out) {
  if (size < 10 || std::memcmp(bytes, "\x93NUMPY", 6) != 0) throw ImageError(Kind::NotRecognized, what, "no .npy magic");
  const int major = bytes[6];
  size_t header_len, start;
  if (major == 1) header_len = size_t(bytes[8]) | size_t(bytes[9]) << 8, start = 10;
  else if (major == 2 || major == 3) {
    if (size < 12) throw ImageError(Kind::Corrupt, what, "truncated npy header");
    header_len = size_t(load<uint32_t>(bytes + 8)), start = 12;
  } else {
    throw ImageError(Kind::Unsupported, what, "npy format version " + std::to_string(major));
  }
  if (header_len > size - start) throw ImageError(Kind::Corrupt, what, "npy header runs past the data");
  const std::string header(reinterpret_cast<const char*>(bytes + start), header_len);
  NpyArray a;
  std::string descr = dict_value(header, "descr", what);
  if (descr.size() < 2 || (descr.front() != '\'' && descr.front() != '"'))
    throw ImageError(Kind::Unsupported, what, "npy dtype " + descr);
  a.dtype = descr.substr(1, descr.size() - 2);
  if (dtype_itemsize(a.dtype) == 0) throw ImageError(Kind::Unsupported, what, "npy dtype " + a.dtype);
  if (a.dtype == "<u1" || a.dtype == "<i1") a.dtype[0] = '|';
  if (dict_value(header, "fortran_order", what) != "False")
    throw ImageError(Kind::Unsupported, what, "npy array in Fortran order");
  a.shape = parse_shape(dict_value(header, "shape", what), what);
  uint64_t n = a.itemsize();
  for (int64_t d : a.shape) {
    n *= uint64_t(d);
    if (n > max_bytes) throw ImageError(Kind::TooLarge, what, "npy array larger than " + std::to_string(max_bytes) + " bytes");
  }
  const size_t data_at = start + header_len;
  if (n > size - data_at)
    throw ImageError(Kind::Corrupt, what, "npy shape needs " + std::to_string(n) + " bytes; " +
                                              std::to_string(size - data_at) + " present");
  *data_at_out = data_at;
  *data_bytes_out = size_t(n);
  return a;
}

}  // namespace

NpyArray parse_npy(const uint8_t* bytes, size_t size, const std::string& what, uint64_t max_bytes) {
  size_t data_at, n;
  NpyArray a = parse_npy_header(bytes, size, what, max_bytes, &data_at, &n);
  a.data.assign(bytes + data_at, bytes + data_at + n);
  return a;
}

// Takes the header off in place: the array keeps the inflated buffer instead
// of a second copy of it (a MedMNIST-style training set is hundreds of MB).
NpyArray parse_npy(std::vector<uint8_t>&& bytes, const std::string& what, uint64_t max_bytes) {
  size_t data_at, n;
  NpyArray a = parse_npy_header(bytes.data(), bytes.size(), what, max_bytes, &data_at, &n);
  bytes.erase(bytes.begin(), bytes.begin() + std::ptrdiff_t(data_at));
  bytes.resize(n);
  a.data = std::move(bytes);
  return a;
}

NpzFile NpzFile::open(const std::string& path) {
  try {
    return NpzFile(ZipReader::open_file(path), path);
  } catch (const ImageError&) {
    throw;
  } catch (const Error& e) {
    throw ImageError(Kind::Corrupt, path, e.what());
  }
}

std::vector<std::string> NpzFile::names() const {
  std::vector<std::string> out;
  for (const ZipEntry& e : zip_.entries())
    if (e.name.size() > 4 && e.name.compare(e.name.size() - 4, 4, ".npy") == 0) out.push_back(e.name.substr(0, e.name.size() - 4));
  return out;
}

bool NpzFile::has(const std::string& name) const { return zip_.find(name + ".npy") != nullptr; }

NpyArray NpzFile::array(const std::string& name, uint64_t max_bytes) const {
  const std::string what = path_ + ":" + name;
  if (!has(name)) throw ImageError(Kind::BadOption, path_, "no array '" + name + "'");
  std::vector<uint8_t> bytes;
  try {
    bytes = zip_.read(name + ".npy", max_bytes + 4096);  // + room for the npy header
  } catch (const Error& e) {
    throw ImageError(Kind::Corrupt, what, e.what());
  }
  return parse_npy(std::move(bytes), what, max_bytes);
}

Image MedmnistSplit::image(int64_t row, int64_t slice) const {
  if (row < 0 || row >= count) throw ImageError(Kind::BadOption, path, split + " row " + std::to_string(row));
  Image img;
  img.source_path = path;
  img.format = "npz";
  img.item_index = row;
  int64_t item = 1;
  for (int64_t d : item_shape) item *= d;
  const uint8_t* src = images.data() + row * item;
  if (volumetric()) {
    const int64_t depth = item_shape[0];
    if (slice < 0) slice = depth / 2;
    if (slice >= depth) throw ImageError(Kind::BadOption, path, "slice " + std::to_string(slice) + " of " + std::to_string(depth));
    img.height = item_shape[1], img.width = item_shape[2], img.channels = 1;
    src += slice * img.height * img.width;
    img.slice_index = slice;
    img.slice_axis = 0;
  } else {
    img.height = item_shape[0], img.width = item_shape[1];
    img.channels = item_shape.size() == 3 ? 3 : 1;
  }
  img.pixels.assign(src, src + img.numel());
  img.window_low = 0, img.window_high = 255, img.window_source = "full range";
  return img;
}

MedmnistSplit read_medmnist(const std::string& path, const std::string& split, uint64_t max_bytes) {
  return read_medmnist(NpzFile::open(path), split, max_bytes);
}

MedmnistSplit read_medmnist(const NpzFile& npz, const std::string& split, uint64_t max_bytes) {
  const std::string& path = npz.path();
  if (split != "train" && split != "val" && split != "test")
    throw ImageError(Kind::BadOption, path, "split '" + split + "' (train, val or test)");
  NpyArray images = npz.array(split + "_images", max_bytes);
  const NpyArray labels = npz.array(split + "_labels", max_bytes);
  const std::string what = path + ":" + split;
  if (images.dtype != "|u1") throw ImageError(Kind::Unsupported, what, "images of dtype " + images.dtype + " (MedMNIST is uint8)");
  const size_t nd = images.shape.size();
  if (nd != 3 && nd != 4) throw ImageError(Kind::Unsupported, what, "images of " + std::to_string(nd) + " dimensions");
  MedmnistSplit s;
  s.path = path, s.split = split;
  s.count = images.shape[0];
  s.item_shape.assign(images.shape.begin() + 1, images.shape.end());
  if (labels.shape.empty() || labels.shape[0] != s.count)
    throw ImageError(Kind::Corrupt, what, "labels do not have one row per image");
  // label(row) reads labels[row * label_columns]: any other shape would read past them.
  if (labels.shape.size() > 2 || (labels.shape.size() == 2 && labels.shape[1] < 1))
    throw ImageError(Kind::Corrupt, what, "labels must be (N) or (N, k) with k >= 1 columns");
  s.label_columns = labels.shape.size() > 1 ? labels.shape[1] : 1;
  s.labels = labels.to_int64();
  s.images = std::move(images.data);
  return s;
}

}  // namespace mm
