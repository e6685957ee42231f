#!/usr/bin/python3
"""Per-tensor mean and std of the reference MedMamba's initialisation (test/reference/medmamba.py),
for test_model_init.cpp: our init_reference must draw from the same distributions.

    /usr/bin/python3 test/reference/make_init_stats_fixture.py test/fixtures/init_stats.json

Averaged over 4 seeds of a dims 48..384 model (4 classes), float64 statistics.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import medmamba  # noqa: E402


def main():
    stats = {}
    seeds = range(4)
    for seed in seeds:
        torch.manual_seed(seed)
        m = medmamba.VSSM(dims=[48, 96, 192, 384], depths=[2, 2, 4, 2], num_classes=4)
        for k, v in m.state_dict().items():
            if v.dtype != torch.float32:
                continue
            v = v.double()
            s = stats.setdefault(k, [0.0, 0.0])
            s[0] += float(v.mean()) / len(seeds)
            s[1] += float(v.std(unbiased=False)) / len(seeds)
    with open(sys.argv[1], "w") as f:
        json.dump({"config": {"dims": [48, 96, 192, 384], "depths": [2, 2, 4, 2], "num_classes": 4},
                   "mean_std": stats}, f, indent=0, sort_keys=True)


if __name__ == "__main__":
    main()
