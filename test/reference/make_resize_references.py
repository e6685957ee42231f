#!/usr/bin/python3
"""Resize references from Pillow (and torch for the no-antialias mode) for
test/test_preprocess.cpp, on real images of the shared data.

    /usr/bin/python3 test/reference/make_resize_references.py   # from the repository root

Writes test/fixtures/preprocess/resize.json and one little-endian float32 (or
uint8) file per output. Inputs are 8-bit pictures scaled to [0, 1] as float32
(x / 255), resized in Pillow's "F" mode: the float path torchvision's Resize
follows on PIL images, without the 8-bit rounding. The "u8" outputs are what
torchvision really sees (Pillow resizing the 8-bit image), for the
within-one-grey-level check.
"""
import json
import os

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
OUT = os.path.join(ROOT, "test", "fixtures", "preprocess")

PIL_METHODS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}

# (name, input, how to get the 8-bit input, output (height, width))
CASES = [
    # MedMNIST's 28 x 28 up to a model size (upscaling), as the fine-tuning path does.
    ("pneumonia_train0_up", "medmnist/pneumoniamnist.npz", "npz:train_images:0", (61, 53)),
    # A 224 x 224 grey brain MRI down to a small size (antialiasing matters).
    ("brain_grey_down", "brain-tumor-mri/Testing/notumor/Te-no_0379.jpg", "L", (37, 45)),
    # An RGB-stored brain MRI, three channels.
    ("brain_rgb_down", "brain-tumor-mri/Training/glioma/Tr-glTr_0000.jpg", "RGB", (40, 40)),
]


def load_u8(rel, how):
    path = os.path.join(DATA, rel)
    if how.startswith("npz:"):
        _, key, row = how.split(":")
        return np.load(path)[key][int(row)]
    img = Image.open(path)
    assert img.mode == how, (rel, img.mode)
    return np.asarray(img)


def pil_float_resize(u8, size_hw, method):
    unit = u8.astype(np.float32) / np.float32(255)
    planes = [unit] if unit.ndim == 2 else [unit[..., c] for c in range(unit.shape[2])]
    out = [np.asarray(Image.fromarray(p, mode="F").resize(size_hw[::-1], PIL_METHODS[method])) for p in planes]
    return out[0] if len(out) == 1 else np.stack(out, axis=-1)


def torch_no_antialias(u8, size_hw):
    import torch
    import torch.nn.functional as F
    unit = torch.from_numpy(u8.astype(np.float32) / np.float32(255))
    x = unit[None, None] if unit.ndim == 2 else unit.permute(2, 0, 1)[None]
    y = F.interpolate(x, size=size_hw, mode="bilinear", align_corners=False, antialias=False)[0]
    return (y[0] if unit.ndim == 2 else y.permute(1, 2, 0)).numpy()


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = []
    for name, rel, how, size_hw in CASES:
        u8 = load_u8(rel, how)
        case = {"name": name, "input": rel, "how": how, "input_shape": list(u8.shape),
                "output_hw": list(size_hw), "outputs": {}}
        results = {m: pil_float_resize(u8, size_hw, m) for m in PIL_METHODS}
        try:
            results["bilinear-no-antialias"] = torch_no_antialias(u8, size_hw)
        except ImportError:
            pass
        for method, arr in results.items():
            fname = f"{name}.{method}.f32"
            np.ascontiguousarray(arr, dtype="<f4").tofile(os.path.join(OUT, fname))
            case["outputs"][method] = fname
        # torchvision's actual path: Pillow resizes the 8-bit picture.
        pil = Image.fromarray(u8).resize(size_hw[::-1], Image.BILINEAR)
        fname = f"{name}.bilinear.u8"
        np.ascontiguousarray(np.asarray(pil), dtype=np.uint8).tofile(os.path.join(OUT, fname))
        case["pil_u8_bilinear"] = fname
        manifest.append(case)
    with open(os.path.join(OUT, "resize.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{len(manifest)} cases written to {OUT}")


if __name__ == "__main__":
    main()
