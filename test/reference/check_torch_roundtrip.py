#!/usr/bin/python3
"""Checks a .pth written by mm-convert the way a PyTorch user would use it.

    check_torch_roundtrip.py OURS.pth --fixture F.safetensors [--logits KEY] [--reference REF.pth]

1. torch.load(OURS, weights_only=True) reads it: an OrderedDict of tensors.
2. Its keys are the reference model's state_dict() keys, in the same order.
3. The reference MedMamba (config from the fixture's "config" metadata) accepts
   it with load_state_dict(strict=True), and its eval-mode logits on the
   fixture's "input" equal the fixture's logits (relative L2 error < 1e-4).
4. With --reference: every tensor equals REF's bit for bit, with the same dtype.

Exit 0 when all hold; the test suite runs this when torch is installed.
"""
import argparse
import collections
import json
import os
import sys

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import medmamba  # noqa: E402


def raw_bytes(t):
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--logits", default="logits_eval")
    ap.add_argument("--reference")
    a = ap.parse_args()

    sd = torch.load(a.ours, weights_only=True)
    assert isinstance(sd, collections.OrderedDict), type(sd)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())

    fx = load_file(a.fixture)
    from safetensors import safe_open
    with safe_open(a.fixture, framework="pt") as f:
        cfg = json.loads(f.metadata()["config"])
    model = medmamba.VSSM(in_chans=cfg["in_chans"], num_classes=cfg["num_classes"], depths=cfg["depths"],
                          dims=cfg["dims"], d_state=cfg["d_state"], drop_path_rate=0.0)
    want_keys = list(model.state_dict().keys())
    assert list(sd.keys()) == want_keys, "keys differ from the reference state_dict() (names or order)"
    model.load_state_dict(sd, strict=True)
    model = model.double().eval()
    model.set_scan_impl("loop")
    with torch.no_grad():
        logits = model(fx["input"].double())
    want = fx[a.logits].double()
    err = ((logits - want).norm() / want.norm()).item()
    assert err < 1e-4, f"logits relative L2 error {err:.3e}"

    if a.reference:
        ref = torch.load(a.reference, weights_only=True)
        ref = collections.OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in ref.items())
        assert set(ref) == set(sd), set(ref) ^ set(sd)
        for k, v in ref.items():
            assert sd[k].dtype == v.dtype, (k, sd[k].dtype, v.dtype)
            assert sd[k].shape == v.shape, (k, sd[k].shape, v.shape)
            assert torch.equal(raw_bytes(sd[k]), raw_bytes(v)), f"{k} differs"
    print(f"torch {torch.__version__} read {a.ours}: {len(sd)} tensors, load_state_dict ok, "
          f"logits rel err {err:.2e}" + (", tensors bit-identical to the reference" if a.reference else ""))


if __name__ == "__main__":
    main()
