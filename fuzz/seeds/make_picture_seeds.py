#!/usr/bin/python3
"""Small PNG, JPEG, TIFF and BMP seed inputs for fuzz/fuzz_picture.cpp.

    /usr/bin/python3 fuzz/seeds/make_picture_seeds.py   # from the repository root

A 16 x 16 pattern in the layouts the picture reader handles (grey, grey+alpha,
16-bit grey, RGB, RGBA, palette, RLE8 BMP; baseline and progressive JPEG; one- and
two-page TIFF), each well under 4 KB, so that libFuzzer starts from every
decoding path. Needs python3-pil and python3-numpy.
"""
import os
import struct

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "picture")
rng = np.random.default_rng(7)


def rle8_bmp(index):
    """An 8-bit BMP with BI_RLE8 pixels (Pillow writes none): two runs per row, bottom row first."""
    palette = b"".join(struct.pack("<4B", v, v, 255 - v, 0) for v in range(0, 256, 16))
    rows = b"".join(bytes([8, row[0], 8, row[8], 0, 0]) for row in index[::-1]) + b"\0\1"
    info = struct.pack("<IiiHHIIiiII", 40, index.shape[1], index.shape[0], 1, 8, 1, len(rows), 2835, 2835, 16, 0)
    offset = 14 + len(info) + len(palette)
    return struct.pack("<2sIHHI", b"BM", offset + len(rows), 0, 0, offset) + info + palette + rows


def main():
    os.makedirs(OUT, exist_ok=True)
    y, x = np.mgrid[0:16, 0:16]
    grey = (x * 13 + y * 7).astype(np.uint8)
    rgb = np.stack([grey, grey[::-1], rng.integers(0, 256, (16, 16), dtype=np.uint8)], axis=-1)
    pictures = {
        "grey.png": Image.fromarray(grey, "L"),
        "grey16.png": Image.fromarray((grey.astype(np.uint16) * 257), "I;16"),
        "grey_alpha.png": Image.fromarray(np.stack([grey, grey[:, ::-1]], axis=-1), "LA"),
        "rgb.png": Image.fromarray(rgb, "RGB"),
        "rgba.png": Image.fromarray(np.dstack([rgb, grey]), "RGBA"),
        "palette.png": Image.fromarray(rgb, "RGB").quantize(16),
        "rgb.bmp": Image.fromarray(rgb, "RGB"),
        "palette.bmp": Image.fromarray(rgb, "RGB").quantize(16),
        "grey.tif": Image.fromarray(grey, "L"),
        "rgb_deflate.tif": Image.fromarray(rgb, "RGB"),
    }
    options = {"rgb_deflate.tif": {"compression": "tiff_adobe_deflate"}}
    for name, img in pictures.items():
        img.save(os.path.join(OUT, name), **options.get(name, {}))
    Image.fromarray(grey, "L").save(os.path.join(OUT, "grey_baseline.jpg"), quality=90)
    Image.fromarray(rgb, "RGB").save(os.path.join(OUT, "rgb_progressive.jpg"), quality=90, progressive=True)
    Image.fromarray(grey, "L").save(os.path.join(OUT, "two_pages.tif"), save_all=True,
                                    append_images=[Image.fromarray(grey[::-1].copy(), "L")])
    with open(os.path.join(OUT, "palette_rle8.bmp"), "wb") as f:
        f.write(rle8_bmp(grey // 16))
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))


if __name__ == "__main__":
    main()
