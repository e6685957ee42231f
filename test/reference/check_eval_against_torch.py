#!/usr/bin/python3
"""Scores a model file with PyTorch and scikit-learn, and compares with mm-eval.

    check_eval_against_torch.py --model M.safetensors --data D [--split test]
        [--exclude FILE] --mm-eval-json J [--tolerance 5e-4] [--resize uint8|float]

The issue asks that the metrics mm-eval reports for a converted model equal
those scikit-learn computes on PyTorch's own predictions for the same model and
images. This is that check, independent of our C++ code:

  - the reference MedMamba (test/reference/medmamba.py) loads the model file's
    tensors and config, in eval mode;
  - images go through the reference evaluation transform, as torchvision would
    apply it (without needing torchvision): PIL image -> RGB ->
    resize((S, S), BILINEAR) -> /255 -> normalize(mean, std), with S, mean and
    std from the model file's metadata;
  - metrics come from make_metric_fixtures.metrics() (scikit-learn), and are
    compared with J, written by `mm-eval --model M --data D --json J`.

D is a class folder holding only images (optionally under train/val/test or
Training/Testing folders, classes sorted) or a MedMNIST .npz. PIL resizes
8-bit images and rounds, while our pipeline resizes in float, so logits differ
slightly: a trained model's metrics agree to the printed precision; a random
model with near-uniform probabilities may flip a few argmaxes, which the
script reports. --resize float repeats our arithmetic instead, which isolates
the model and the metrics from that rounding.
Exit status 0 when every metric agrees within the tolerance.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import medmamba  # noqa: E402
from make_metric_fixtures import metrics  # noqa: E402

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}


def load_model(path):
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    cfg = json.loads(meta["config"])
    pre = json.loads(meta.get("preprocess", "{}"))
    model = medmamba.VSSM(in_chans=cfg["in_chans"], num_classes=cfg["num_classes"], depths=cfg["depths"],
                          dims=cfg["dims"], d_state=cfg["d_state"], drop_path_rate=0.0)
    model.load_state_dict(load_file(path), strict=True)
    return model.eval(), pre.get("input_size", cfg["image_size"]), pre.get("mean", [0.5] * 3), pre.get("std", [0.5] * 3)


def folder_samples(root, split, exclude):
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    split_dirs = [d for d in subdirs if d.lower() in SPLIT_ALIASES]
    if split_dirs:
        classes = sorted({c for s in split_dirs for c in os.listdir(os.path.join(root, s))
                          if os.path.isdir(os.path.join(root, s, c)) and not c.startswith(".")})
        chosen = [s for s in split_dirs if SPLIT_ALIASES[s.lower()] == SPLIT_ALIASES[split.lower()]]
    else:
        classes, chosen = subdirs, [""]
    skip = set()
    if exclude:
        with open(exclude) as f:
            skip = {line.split("#")[0].strip() for line in f if line.split("#")[0].strip()}
    samples = []
    for s in chosen:
        for label, c in enumerate(classes):
            base = os.path.join(root, s, c)
            if not os.path.isdir(base):
                continue
            for dirpath, dirnames, files in os.walk(base):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(files):
                    rel = os.path.relpath(os.path.join(dirpath, name), root)
                    if not name.startswith(".") and rel not in skip:
                        samples.append((lambda p=os.path.join(dirpath, name): Image.open(p), label))
    return samples


def npz_samples(path, split):
    z = np.load(path)
    split = SPLIT_ALIASES[split.lower()]
    images, labels = z[split + "_images"], z[split + "_labels"][:, 0]
    if images.ndim == 4 and images.shape[-1] != 3:  # 3-D: the middle slice, as mm-eval takes it
        images = images[:, images.shape[1] // 2]
    return [(lambda a=images[i]: Image.fromarray(a), int(labels[i])) for i in range(len(labels))]


def to_unit_chw(img, size, resize):
    """(3, S, S) float32 in [0, 1]. "uint8": torchvision's Resize on the PIL
    image, then ToTensor. "float": each channel resized as a float ("F") image,
    which is what our pipeline computes (window to [0, 1], then resize)."""
    img = img.convert("RGB")
    if resize == "uint8":
        return np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255.0
    channels = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return np.stack([np.asarray(Image.fromarray(c, "F").resize((size, size), Image.BILINEAR)) for c in channels])


def predict(model, samples, size, mean, std, batch_size, resize):
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    probs = []
    for start in range(0, len(samples), batch_size):
        batch = []
        for open_image, _ in samples[start:start + batch_size]:
            batch.append((to_unit_chw(open_image(), size, resize) - mean) / std)
        with torch.no_grad():
            logits = model(torch.from_numpy(np.stack(batch)))
        probs.append(torch.softmax(logits.double(), dim=1).numpy())
    return np.concatenate(probs)


def compare(ours, ref, class_names, tolerance):
    worst = []

    def check(name, a, b):
        if a is None or b is None:
            if (a is None) != (b is None):
                worst.append((float("inf"), name, a, b))
            return
        worst.append((abs(a - b), name, a, b))

    for key in ("accuracy", "balanced_accuracy", "kappa", "ece"):
        check(key, ours[key], ref[key])
    for key, value in ref["macro"].items():
        check("macro." + key, ours["macro"][key], value)
    for c, name in enumerate(class_names):
        for key in ("precision", "recall", "specificity", "f1", "auc"):
            check("%s.%s" % (name, key), ours["per_class"][name][key], ref["per_class"][c][key])
    worst.sort(key=lambda w: -w[0])
    return worst, [w for w in worst if w[0] > tolerance]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--exclude")
    ap.add_argument("--mm-eval-json", required=True)
    ap.add_argument("--tolerance", type=float, default=5e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--resize", choices=["uint8", "float"], default="uint8",
                    help="uint8: torchvision on PIL images (default); float: our pipeline's arithmetic")
    a = ap.parse_args()

    torch.set_grad_enabled(False)
    model, size, mean, std = load_model(a.model)
    samples = (npz_samples(a.data, a.split) if a.data.endswith(".npz")
               else folder_samples(a.data, a.split, a.exclude))
    y = np.array([label for _, label in samples])
    p = predict(model, samples, size, mean, std, a.batch_size, a.resize)
    ref = metrics(y, p)
    with open(a.mm_eval_json) as f:
        ours = json.load(f)
    if ours["n"] != len(y):
        sys.exit("mm-eval scored %d samples, PyTorch %d" % (ours["n"], len(y)))
    ref_cm = ref["confusion_matrix"]
    flips = int(np.sum(np.array(ours["confusion_matrix"]) != np.array(ref_cm)))
    worst, bad = compare(ours, ref, ours["class_names"], a.tolerance)
    print("samples %d; confusion-matrix cells that differ: %d" % (len(y), flips))
    for diff, name, mine, theirs in worst[:5]:
        print("  %-28s mm-eval %s  sklearn-on-torch %s  |diff| %.3g" % (name, mine, theirs, diff))
    if bad:
        print("FAIL: %d metrics differ by more than %g" % (len(bad), a.tolerance))
        sys.exit(1)
    print("OK: every metric within %g" % a.tolerance)


if __name__ == "__main__":
    main()
