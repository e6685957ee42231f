// The picture fuzz target's body, shared by fuzz/fuzz_picture.cpp (libFuzzer) and
// test/test_fuzz_regressions.cpp (replays fuzz/regressions/fuzz_picture/ in the
// doctest suite), so a committed regression input runs the same code either way.
// The reader reads from a path, so each input is written to a per-process temporary
// file, named as a file of the format its magic bytes claim would be (the readers
// decide by content; ITK's JPEG reader, no longer used, went by the name).
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "imaging/image_reader.h"

// Returns normally for images or an mm::Error; anything else is a finding.
inline void fuzz_one_picture(const uint8_t* data, size_t size) {
  // Decided as read_images decides; what is no picture there is tried as a PNG,
  // whose reader must then turn it away.
  mm::FileKind kind = mm::detect_file_kind(data, size, "");
  if (kind != mm::FileKind::Jpeg && kind != mm::FileKind::Tiff && kind != mm::FileKind::Bmp) kind = mm::FileKind::Png;
  const char* extension = kind == mm::FileKind::Jpeg ? ".jpg"
                          : kind == mm::FileKind::Tiff ? ".tif"
                          : kind == mm::FileKind::Bmp  ? ".bmp"
                                                       : ".png";
  static const std::string base = "/tmp/mm_fuzz_picture_" + std::to_string(getpid());
  const std::string path = base + extension;
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  using Mode = mm::WindowOptions::Mode;
  mm::ReadOptions options;
  // Hostile headers asking for more are refused, not allocated. Small: an image filling the
  // limit is decoded four times through coverage-instrumented per-pixel loops (at 4 MiB a
  // 16 x 64385 JPEG took 0.36 s, past the 1-s timeout on a shared machine).
  options.max_bytes = uint64_t(1) << 20;
  options.picture_window.center = 100, options.picture_window.width = 50;
  options.draft_side = size > 0 && (data[size - 1] & 1) ? 16 : 0;  // JPEG's DCT scaling for half the inputs
  try {
    // File is left out: pictures carry no window, and it fails only after the same decoding.
    for (Mode mode : {Mode::Default, Mode::FullRange, Mode::MinMax, Mode::Explicit}) {
      options.picture_window.mode = mode;
      for (const mm::Image& img : mm::read_picture(path, kind, options))
        if (int64_t(img.pixels.size()) != img.numel()) __builtin_trap();
    }
  } catch (const mm::Error&) {
  }
  std::remove(path.c_str());
}
