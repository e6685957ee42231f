#!/usr/bin/env python3
"""Writes test/fixtures/metrics/<case>.json: fixture predictions and the metric
values scikit-learn computes for them, for test/test_metrics.cpp.

Run with Debian's Python and python3-sklearn:
    /usr/bin/python3 test/reference/make_metric_fixtures.py

Each file holds the inputs (num_classes, class_names, labels, probabilities as
an n x k list) and `expected`, with the definitions docs/mm-eval.md states:
  - precision / recall / F1: precision_recall_fscore_support(labels=range(k),
    zero_division=0), per class and average='macro' (over all k classes);
  - specificity: tn / (tn + fp) per class from multilabel_confusion_matrix, 0
    when tn + fp == 0; macro is the plain mean;
  - AUC: roc_auc_score(y == c, p[:, c]) per class, None when y_true lacks the
    class or holds only it; macro: roc_auc_score(y, p[:, 1]) when k == 2, else
    roc_auc_score(..., multi_class='ovr', average='macro'), None where it raises;
  - kappa: cohen_kappa_score, None where it is NaN;
  - ECE: 15 equal-width bins on max probability, (lo, hi] (sklearn has none);
  - top-k: top_k_accuracy_score(labels=range(k)); for k == 2 it gets p[:, 1].
A bootstrap block repeats the metrics on resamples drawn with SplitMix64
(index = next() % n), as lib/eval/bootstrap.cpp draws them, and takes
numpy.percentile's 2.5 and 97.5 (linear method) of the defined values.
"""
import json
import os
import warnings

import numpy as np
import sklearn
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, cohen_kappa_score,
                             confusion_matrix, multilabel_confusion_matrix,
                             precision_recall_fscore_support, roc_auc_score,
                             top_k_accuracy_score)

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "metrics")
ECE_BINS = 15
MASK64 = (1 << 64) - 1

warnings.filterwarnings("ignore")  # zero-division and undefined-metric warnings are the point


def undefined_to_none(x):
    x = float(x)
    return None if np.isnan(x) else x


def binary_auc(positive, scores):
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive.astype(int), scores))


def expected_calibration_error(y, p):
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def metrics(y, p):
    k = p.shape[1]
    labels = list(range(k))
    pred = p.argmax(axis=1)
    prec, rec, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=0)
    mprec, mrec, mf1, _ = precision_recall_fscore_support(
        y, pred, labels=labels, average="macro", zero_division=0)
    mcm = multilabel_confusion_matrix(y, pred, labels=labels)
    tn, fp = mcm[:, 0, 0], mcm[:, 0, 1]
    spec = [float(t / (t + f)) if t + f > 0 else 0.0 for t, f in zip(tn, fp)]
    aucs = [binary_auc(y == c, p[:, c]) for c in range(k)]
    try:
        if k == 2:
            macro_auc = float(roc_auc_score(y, p[:, 1]))
        else:
            macro_auc = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels))
    except ValueError:
        macro_auc = None
    top_k = {}
    for kk in range(1, k + 1):
        score = p[:, 1] if k == 2 else p
        top_k[str(kk)] = float(top_k_accuracy_score(y, score, k=kk, labels=labels))
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "kappa": undefined_to_none(cohen_kappa_score(y, pred)),
        "ece": expected_calibration_error(y, p),
        "macro": {"precision": float(mprec), "recall": float(mrec),
                  "specificity": float(np.mean(spec)), "f1": float(mf1), "auc": macro_auc},
        "per_class": [{"precision": float(prec[c]), "recall": float(rec[c]),
                       "specificity": spec[c], "f1": float(f1[c]), "auc": aucs[c],
                       "support": int(support[c])} for c in range(k)],
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
        "top_k": top_k,
    }


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def flatten(m):
    """The scalar metrics of one result as {"accuracy": .., "macro.f1": .., "per_class.0.auc": ..}."""
    flat = {key: m[key] for key in ("accuracy", "balanced_accuracy", "kappa", "ece")}
    for key, value in m["macro"].items():
        flat["macro." + key] = value
    for c, entry in enumerate(m["per_class"]):
        for key in ("precision", "recall", "specificity", "f1", "auc"):
            flat["per_class.%d.%s" % (c, key)] = entry[key]
    for key, value in m["top_k"].items():
        flat["top_k." + key] = value
    return flat


def bootstrap(y, p, resamples, seed):
    rng = SplitMix64(seed)
    n = len(y)
    samples = {}
    for _ in range(resamples):
        idx = np.array([rng.next() % n for _ in range(n)])
        for key, value in flatten(metrics(y[idx], p[idx])).items():
            samples.setdefault(key, [])
            if value is not None:
                samples[key].append(value)
    ci = {}
    for key, values in samples.items():
        ci[key] = None if not values else [float(np.percentile(values, 2.5)),
                                           float(np.percentile(values, 97.5))]
    return {"resamples": resamples, "seed": seed, "ci": ci}


def noisy_classifier(rng, y, k, skill, temperature=1.0):
    """Softmax of logits that favour the true class by `skill`."""
    logits = rng.normal(0.0, 1.0, size=(len(y), k))
    logits[np.arange(len(y)), y] += skill
    e = np.exp(logits / temperature)
    return e / e.sum(axis=1, keepdims=True)


def quantised_probabilities(rng, k, y, steps=10, skill=0.4):
    """Rows of integer weights summing to `steps`, divided by steps: many exact
    ties, in scores, in the argmax and in the top-k order."""
    p = np.zeros((len(y), k))
    for i, label in enumerate(y):
        favour = np.full(k, (1.0 - skill) / k)
        favour[label] += skill
        p[i] = rng.multinomial(steps, favour) / steps
    return p


def case_binary(rng):
    y = rng.integers(0, 2, size=200)
    return ["normal", "pneumonia"], y, noisy_classifier(rng, y, 2, 1.2)


def case_multiclass(rng):
    y = rng.integers(0, 4, size=300)
    return ["glioma", "meningioma", "notumor", "pituitary"], y, noisy_classifier(rng, y, 4, 1.5)


def case_imbalanced(rng):
    y = rng.choice(3, size=400, p=[0.85, 0.12, 0.03])
    return ["common", "rare", "very_rare"], y, noisy_classifier(rng, y, 3, 1.0)


def case_never_predicted(rng):
    y = rng.integers(0, 4, size=160)
    p = noisy_classifier(rng, y, 4, 1.5)
    p[:, 3] = np.minimum(p[:, 3], 0.9 * p[:, :3].max(axis=1))  # in y_true, never the argmax
    return ["a", "b", "c", "d"], y, p / p.sum(axis=1, keepdims=True)


def case_absent_class(rng):
    y = rng.choice([0, 1, 3], size=120)  # class 2 never occurs in y_true: its AUC is undefined
    return ["a", "b", "c", "d"], y, noisy_classifier(rng, y, 4, 1.0)


def case_ties(rng):
    y = rng.integers(0, 3, size=150)
    return ["x", "y", "z"], y, quantised_probabilities(rng, 3, y)


def case_ties_binary(rng):
    y = rng.integers(0, 2, size=100)
    p1 = np.clip(np.round(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.25, size=100), 1), 0.0, 1.0)
    p1[:10] = 0.5  # argmax ties and top-1's p > 0.5 rule
    return ["neg", "pos"], y, np.stack([1.0 - p1, p1], axis=1)


def case_single_class(rng):
    y = np.zeros(20, dtype=int)  # every AUC undefined; kappa 0/0
    p = noisy_classifier(rng, y, 2, 10.0)
    return ["only", "never"], y, p


CASES = {
    "binary": case_binary,
    "multiclass": case_multiclass,
    "imbalanced": case_imbalanced,
    "never_predicted": case_never_predicted,
    "absent_class": case_absent_class,
    "ties": case_ties,
    "ties_binary": case_ties_binary,
    "single_class": case_single_class,
}
BOOTSTRAP = {"multiclass": (200, 7), "binary": (200, 11), "absent_class": (100, 3)}


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    for seed, (name, make) in enumerate(CASES.items()):
        rng = np.random.default_rng(1000 + seed)
        class_names, y, p = make(rng)
        y = np.asarray(y, dtype=int)
        fixture = {
            "case": name,
            "sklearn_version": sklearn.__version__,
            "num_classes": int(p.shape[1]),
            "class_names": class_names,
            "labels": y.tolist(),
            "probabilities": p.tolist(),
            "expected": metrics(y, p),
        }
        if name in BOOTSTRAP:
            fixture["bootstrap"] = bootstrap(y, p, *BOOTSTRAP[name])
        path = os.path.join(OUT_DIR, name + ".json")
        with open(path, "w") as f:
            json.dump(fixture, f, indent=1)
            f.write("\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
