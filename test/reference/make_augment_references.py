#!/usr/bin/python3
"""Pillow references for the training augmentation (test/test_train_data.cpp).

    /usr/bin/python3 test/reference/make_augment_references.py   # from the repository root

torchvision's transforms on PIL images are thin calls into Pillow:
RandomRotation -> F.rotate -> Image.rotate(angle, resample, expand=False,
center=None, fillcolor=fill); RandomResizedCrop -> F.resized_crop ->
Image.crop then Image.resize; ColorJitter's brightness and contrast ->
F.adjust_brightness / adjust_contrast -> ImageEnhance.Brightness / Contrast
(8-bit only in Pillow, so those references are 8-bit). torchvision itself is not installable for
Debian's torch 1.13 here, so the references call Pillow the way torchvision
does, in Pillow's float ("F") mode so that no 8-bit rounding hides differences.

Input: MedMNIST pneumonia train image 0 (28 x 28, uint8), as the cache holds
it at size 28. Writes test/fixtures/augment/augment.json and one little-endian
float32 file per geometric output (28 x 28, values in [0, 1]), one uint8 file
per jitter output.
"""
import json
import os

import numpy as np
from PIL import Image, ImageEnhance

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
OUT = os.path.join(ROOT, "test", "fixtures", "augment")

ROTATIONS = [11.3, -7.9, 15.0]
# (brightness factor, contrast factor, which first)
JITTERS = [(1.07, 0.83, "brightness"), (0.93, 1.18, "contrast")]
CROPS = [(3, 5, 21, 19), (0, 0, 24, 28), (6, 2, 20, 23)]  # (top, left, height, width)


def main():
    os.makedirs(OUT, exist_ok=True)
    u8 = np.load(os.path.join(DATA, "medmnist", "pneumoniamnist.npz"))["train_images"][0]
    assert u8.shape == (28, 28) and u8.dtype == np.uint8
    u8.tofile(os.path.join(OUT, "input.u8"))
    unit = Image.fromarray(u8.astype(np.float32) / np.float32(255), mode="F")
    size = unit.size
    manifest = {"input": "input.u8", "size": 28, "rotations": [], "crops": []}
    for angle in ROTATIONS:
        out = unit.rotate(angle, resample=Image.BILINEAR, expand=False, center=None, fillcolor=0)
        name = f"rotate_{angle:+.1f}.f32"
        np.asarray(out, dtype="<f4").tofile(os.path.join(OUT, name))
        manifest["rotations"].append({"angle": angle, "output": name})
    for top, left, h, w in CROPS:
        out = unit.crop((left, top, left + w, top + h)).resize(size, Image.BILINEAR)
        name = f"crop_{top}_{left}_{h}_{w}.f32"
        np.asarray(out, dtype="<f4").tofile(os.path.join(OUT, name))
        manifest["crops"].append({"top": top, "left": left, "height": h, "width": w, "output": name})
    manifest["jitters"] = []
    for b, c, first in JITTERS:
        img = Image.fromarray(u8)  # mode "L", as torchvision's PIL path sees it
        steps = [("brightness", b), ("contrast", c)]
        if first == "contrast":
            steps.reverse()
        for kind, factor in steps:
            enhancer = ImageEnhance.Brightness(img) if kind == "brightness" else ImageEnhance.Contrast(img)
            img = enhancer.enhance(factor)
        name = f"jitter_{b}_{c}_{first}.u8"
        np.asarray(img, dtype=np.uint8).tofile(os.path.join(OUT, name))
        manifest["jitters"].append({"brightness": b, "contrast": c, "first": first, "output": name})
    with open(os.path.join(OUT, "augment.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{len(ROTATIONS)} rotations, {len(CROPS)} crops, {len(JITTERS)} jitters written to {OUT}")


if __name__ == "__main__":
    main()
