#include "imaging/image_reader.h"

#include "imaging/picture_decode.h"

namespace mm {

using Kind = ImageError::Kind;

namespace {

picture::Format picture_format(FileKind kind, const std::string& path) {
  switch (kind) {
    case FileKind::Png: return picture::Format::Png;
    case FileKind::Jpeg: return picture::Format::Jpeg;
    case FileKind::Tiff: return picture::Format::Tiff;
    case FileKind::Bmp: return picture::Format::Bmp;
    default: throw ImageError(Kind::NotRecognized, path, std::string("not a picture format: ") + file_kind_name(kind));
  }
}

void picture_window(Image& img, const picture::RawImage& raw, const WindowOptions& w, const std::string& path) {
  using Mode = WindowOptions::Mode;
  switch (w.mode) {
    case Mode::Default:
    case Mode::FullRange:
      if (raw.type_max > raw.type_min) {
        img.window_low = raw.type_min < 0 ? raw.type_min : 0;  // 0..255 for 8 bits, 0..65535 for 16
        img.window_high = raw.type_max;
        img.window_source = "full range";
        break;
      }
      [[fallthrough]];  // float pictures have no type range
    case Mode::MinMax: {
      const auto [lo, hi] = pixel_min_max(img);
      img.window_low = lo, img.window_high = hi, img.window_source = "min-max";
      break;
    }
    case Mode::Explicit:
      set_window_center_width(img, w.center, w.width);
      img.window_source = "explicit";
      break;
    case Mode::File:
      throw ImageError(Kind::BadOption, path, "pictures carry no window; use full range, min-max or explicit");
  }
}

}  // namespace

std::vector<Image> read_picture(const std::string& path, FileKind kind, const ReadOptions& opt) {
  const picture::RawImage raw = picture::decode_picture(path, picture_format(kind, path), opt.max_bytes, opt.draft_side);
  if (raw.dims.size() < 2) throw ImageError(Kind::Unsupported, path, "a picture with one dimension");
  const int64_t width = raw.dims[0], height = raw.dims[1];
  const int64_t pages = raw.voxels() / (width * height);
  // Alpha carries no anatomy: grey+alpha -> grey, RGBA -> RGB.
  const int in_c = raw.components, out_c = in_c >= 3 ? 3 : 1;
  std::vector<Image> out;
  for (int64_t p = 0; p < pages; ++p) {
    Image img;
    img.height = height, img.width = width, img.channels = out_c;
    img.pixels.resize(size_t(img.numel()));
    const float* src = raw.data.data() + p * width * height * in_c;
    for (int64_t i = 0; i < width * height; ++i)
      for (int c = 0; c < out_c; ++c) img.pixels[size_t(i * out_c + c)] = src[i * in_c + c];
    img.source_path = path;
    img.format = file_kind_name(kind);
    img.frame_index = pages > 1 ? p : -1;
    picture_window(img, raw, opt.picture_window, path);
    out.push_back(std::move(img));
  }
  return out;
}

std::vector<Image> read_images(const std::string& path, const ReadOptions& options, const ReadHints& hints) {
  ReadOptions o = options;
  o.draft_side = hints.draft_side;
  return read_images(path, o);
}

std::vector<Image> read_images(const std::string& path, const ReadOptions& opt) {
  FileKind kind;
  try {
    kind = detect_file_kind(path);
  } catch (const Error& e) {
    throw ImageError(Kind::Io, path, "cannot open");
  }
  switch (kind) {
    case FileKind::Dicom: {
      DicomOptions dicom = opt.dicom;
      dicom.draft_side = opt.draft_side;
      return read_dicom(path, dicom);
    }
    case FileKind::Nifti: return read_nifti(path, opt.nifti);
    case FileKind::Png:
    case FileKind::Jpeg:
    case FileKind::Tiff:
    case FileKind::Bmp: return read_picture(path, kind, opt);
    case FileKind::Npz:
      throw ImageError(Kind::Unsupported, path, "a .npz holds a data set, not an image: open it with read_npz_dataset");
    case FileKind::Unknown: break;
  }
  throw ImageError(Kind::NotRecognized, path, "not DICOM, NIfTI, PNG, JPEG, TIFF or BMP by its content");
}

}  // namespace mm
