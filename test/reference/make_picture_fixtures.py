#!/usr/bin/python3
"""Tiny PNG/TIFF/BMP/JPEG pictures for test/test_imaging_pictures.cpp, made with
Pillow from a known pattern (the shared data has JPEGs only).

    /usr/bin/python3 test/reference/make_picture_fixtures.py   # from the repository root

Lossless files hold pattern(): the test recomputes it. For the JPEG, Pillow's
decoding (libjpeg-turbo, as ITK's) is stored in pictures.json, and so is its
decoding of the PNG variants (palette, tRNS, 1-bit, grey+alpha, Adam7, sBIT), as
RGB or grey: alpha dropped, which is what the reader gives.
"""
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "pictures")


def pattern(h, w, c, scale=1):
    y, x, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    return ((x * 7 + y * 13 + ch * 50) % 256 * scale).astype(np.uint16 if scale > 1 else np.uint8)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_raw_png(path, a, color_type, adam7=False, extra=b""):
    """What Pillow does not write: Adam7 interlacing, an sBIT chunk. a: (h, w[, c])."""
    h, w = a.shape[:2]
    dtype = ">u2" if a.dtype == np.uint16 else "u1"
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes if adam7 else [(0, 0, 1, 1)]:
        sub = a[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\0" + row.astype(dtype).tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, 16 if a.dtype == np.uint16 else 8, color_type, 0, 0, int(adam7))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw)) +
                png_chunk(b"IEND", b""))


def png_variants():
    """name -> Pillow's decoding, alpha dropped (sBIT: libpng's shift, which Pillow ignores)."""
    h, w = 13, 11
    grey, rgb = pattern(h, w, 1)[..., 0], pattern(h, w, 3)
    Image.fromarray(rgb, "RGB").quantize(16).save(os.path.join(OUT, "palette.png"))
    Image.fromarray(rgb, "RGB").quantize(16).save(os.path.join(OUT, "palette_trns.png"), transparency=3)
    Image.fromarray(grey, "L").save(os.path.join(OUT, "grey_trns.png"), transparency=7)
    Image.fromarray(grey >= 128).save(os.path.join(OUT, "grey1.png"))
    Image.fromarray(np.dstack([grey, 255 - grey]), "LA").save(os.path.join(OUT, "grey_alpha.png"))
    write_raw_png(os.path.join(OUT, "rgb_adam7.png"), rgb, 2, adam7=True)
    write_raw_png(os.path.join(OUT, "grey16_sbit12.png"), pattern(h, w, 1, 16)[..., 0], 0,
                  extra=png_chunk(b"sBIT", bytes([12])))
    out = {}
    for name in ["palette", "palette_trns", "grey_trns", "grey1", "grey_alpha", "rgb_adam7", "grey16_sbit12"]:
        im = Image.open(os.path.join(OUT, name + ".png"))
        a = np.asarray(im if im.mode.startswith("I") else im.convert("RGB") if im.mode in ("P", "RGB") else im.convert("L"))
        a = a.astype(np.int64) >> (4 if name == "grey16_sbit12" else 0)
        out[name] = {"height": h, "width": w, "channels": 3 if a.ndim == 3 else 1, "pixels": a.reshape(-1).tolist()}
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    h, w = 6, 8
    Image.fromarray(pattern(h, w, 1)[..., 0], "L").save(os.path.join(OUT, "grey.png"))
    Image.fromarray(pattern(h, w, 3), "RGB").save(os.path.join(OUT, "rgb.png"))
    Image.fromarray(pattern(h, w, 4), "RGBA").save(os.path.join(OUT, "rgba.png"))
    Image.fromarray(pattern(h, w, 1, 257)[..., 0].astype(np.uint16), "I;16").save(os.path.join(OUT, "grey16.png"))
    Image.fromarray(pattern(h, w, 3), "RGB").save(os.path.join(OUT, "rgb.bmp"))
    Image.fromarray(pattern(h, w, 1)[..., 0], "L").save(os.path.join(OUT, "grey.tif"))
    Image.fromarray(pattern(h, w, 3), "RGB").save(os.path.join(OUT, "rgb.jpg"), quality=90)
    # A PNG under a misleading name: the reader must go by content.
    Image.fromarray(pattern(h, w, 1)[..., 0], "L").save(os.path.join(OUT, "png_named.jpg"), format="PNG")
    jpeg = np.asarray(Image.open(os.path.join(OUT, "rgb.jpg"))).reshape(-1).tolist()
    with open(os.path.join(OUT, "pictures.json"), "w") as f:
        json.dump({"height": h, "width": w, "rgb_jpg_pillow": jpeg, "png_variants": png_variants()}, f)


if __name__ == "__main__":
    main()
