#!/usr/bin/python3
"""Tiny PNG/TIFF/BMP/JPEG pictures for test/test_imaging_pictures.cpp, made with
Pillow from a known pattern (the shared data has JPEGs only).

    /usr/bin/python3 test/reference/make_picture_fixtures.py   # from the repository root

Lossless files hold pattern(): the test recomputes it. For the JPEG, Pillow's
decoding (libjpeg-turbo, as ITK's) is stored in pictures.json.
"""
import json
import os

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "pictures")


def pattern(h, w, c, scale=1):
    y, x, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    return ((x * 7 + y * 13 + ch * 50) % 256 * scale).astype(np.uint16 if scale > 1 else np.uint8)


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
        json.dump({"height": h, "width": w, "rgb_jpg_pillow": jpeg}, f)


if __name__ == "__main__":
    main()
