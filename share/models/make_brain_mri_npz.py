#!/usr/bin/env python3
"""Pack the brain-tumour MRI folder into one MedMNIST-style .npz for mm-train.

    python3 make_brain_mri_npz.py ../shared/data/brain-tumor-mri brain-mri-224.npz

train_* holds Training/<class>/*.jpg; test_* holds Testing/<class>/*.jpg minus the 216
images listed in test-duplicates-of-train.txt (byte-identical to training images), so
1,095 remain. Classes in folder-name order: glioma, meningioma, notumor, pituitary.
Images are 224x224 greyscale uint8 (PIL's "L" conversion of the few stored as RGB, whose
three channels are equal). mm-train reads the file directly; a GPU machine without the
JPEG readers (ITK) can train from it.

    python3 make_brain_mri_npz.py --val-is-test ../shared/data/brain-tumor-mri brain-mri-224-valtest.npz

also writes the test images as val_*: mm-train then picks its best epoch on the test images
themselves, the protocol of the public MedMamba train.py (it keeps the epoch with the best
accuracy on the folder it validates on). That figure is optimistic; it is only for comparing
with results obtained so.
"""
import os
import sys

import numpy as np
from PIL import Image

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def load(root, split, skip):
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        folder = os.path.join(root, split, name)
        for f in sorted(os.listdir(folder)):
            rel = f"{split}/{name}/{f}"
            if rel in skip or not f.lower().endswith(".jpg"):
                continue
            im = Image.open(os.path.join(folder, f)).convert("L")
            if im.size != (224, 224):
                im = im.resize((224, 224), Image.BILINEAR)
            images.append(np.asarray(im, dtype=np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.int64).reshape(-1, 1)


def main():
    args = sys.argv[1:]
    val_is_test = "--val-is-test" in args
    root, out = [a for a in args if a != "--val-is-test"]
    with open(os.path.join(root, "test-duplicates-of-train.txt")) as f:
        skip = {line.strip() for line in f if line.strip()}
    tr_x, tr_y = load(root, "Training", set())
    te_x, te_y = load(root, "Testing", skip)
    val = {"val_images": te_x, "val_labels": te_y} if val_is_test else {}
    np.savez_compressed(out, train_images=tr_x, train_labels=tr_y, test_images=te_x, test_labels=te_y, **val)
    print(f"{out}: train {tr_x.shape}, test {te_x.shape}{' (also as val)' if val_is_test else ''} "
          f"(skipped {len(skip)} duplicates)")


if __name__ == "__main__":
    main()
