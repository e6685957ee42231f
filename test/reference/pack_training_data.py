#!/usr/bin/python3
"""Packs the training data for a GPU training run of the PyTorch reference into
one small folder that can travel to the GPU machine (../shared does not).

    /usr/bin/python3 test/reference/pack_training_data.py --size 128 --out .device-data

Writes:
  brain_mri_<S>.npz   train_images (N,S,S) uint8, train_labels (N,), from
                      brain-tumor-mri/Training; test_images/test_labels/test_paths
                      from Testing minus test-duplicates-of-train.txt (1095 images).
                      Classes in sorted folder order: glioma, meningioma, notumor, pituitary.
  pneumoniamnist.npz  copied as is (28x28; the trainer upsamples).

Images are converted to grey ('L') and resized with PIL's bilinear filter (which
antialiases when downscaling, like torchvision's Resize on PIL images); our
C++ preprocessing implements the same filter, so mm-eval sees the same inputs up
to the uint8 rounding of this pack.
"""
import argparse
import os
import shutil

import numpy as np
from PIL import Image

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data")
CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def load_split(root, rels, size):
    imgs = [np.asarray(Image.open(os.path.join(root, r)).convert("L").resize((size, size), Image.BILINEAR))
            for r in rels]
    return np.stack(imgs).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--out", default=".device-data")
    a = ap.parse_args()
    root = os.path.join(DATA, "brain-tumor-mri")
    os.makedirs(a.out, exist_ok=True)
    dup = set(open(os.path.join(root, "test-duplicates-of-train.txt")).read().split())
    out = {}
    for split, folder in (("train", "Training"), ("test", "Testing")):
        rels, labels = [], []
        for k, c in enumerate(CLASSES):
            for f in sorted(os.listdir(os.path.join(root, folder, c))):
                rel = f"{folder}/{c}/{f}"
                if split == "test" and rel in dup:
                    continue
                rels.append(rel)
                labels.append(k)
        out[f"{split}_images"] = load_split(root, rels, a.size)
        out[f"{split}_labels"] = np.array(labels, dtype=np.int64)
        out[f"{split}_paths"] = np.array(rels)
        print(split, len(rels), "images")
    np.savez_compressed(os.path.join(a.out, f"brain_mri_{a.size}.npz"), **out)
    shutil.copy(os.path.join(DATA, "medmnist", "pneumoniamnist.npz"), a.out)


if __name__ == "__main__":
    main()
