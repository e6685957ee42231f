#!/usr/bin/python3
"""Writes test/fixtures/train_step.safetensors: one mm-train optimiser step of
the reference implementation, for test/test_train_step.cpp.

    /usr/bin/python3 test/reference/make_train_step_fixture.py

Starting from the small-model fixture's weights (model_small.safetensors, made
by make_fixtures.py), on a fixed batch, in train mode without drop path or
augmentation:
    loss = F.cross_entropy(logits, labels, weight=class_weights, label_smoothing=0.1)
    loss.backward(); clip_grad_norm_(params, 1.0)
    torch.optim.AdamW(lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05).step()
with mm-train's parameter groups: no weight decay on tensors of one dimension,
biases, A_logs and Ds. The model runs in float64 from the float32 weights and
the result is stored in float32 (so the fixture is as exact as storage allows).
Stored: the batch, the class weights, the loss, the gradient norm before
clipping, and the step's change of every parameter and running statistic
("delta.<key>" = after - before, computed in float64; the test adds it to the
starting weights).
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import medmamba  # noqa: E402
from make_fixtures import save_fixture  # noqa: E402  (sorted metadata: reruns are bit-identical)

FIX = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
LR, WD, CLIP, SMOOTHING = 3e-4, 0.05, 1.0, 0.1


def no_decay(name, p):
    return p.ndim <= 1 or name.endswith("bias") or name.endswith("A_logs") or name.endswith("Ds")


def main():
    src = load_file(os.path.join(FIX, "model_small.safetensors"))
    with safe_open(os.path.join(FIX, "model_small.safetensors"), "pt") as f:
        cfg = json.loads(f.metadata()["config"])
    model = medmamba.VSSM(in_chans=cfg["in_chans"], num_classes=cfg["num_classes"], depths=cfg["depths"],
                          dims=cfg["dims"], d_state=cfg["d_state"], drop_path_rate=0.0)
    sd = {k: v for k, v in src.items() if k in model.state_dict()}
    model.load_state_dict(sd)
    model = model.double()
    model.set_scan_impl("loop")
    model.train()

    g = torch.Generator().manual_seed(4242)
    B, S = 4, 64
    images = (torch.rand(B, cfg["in_chans"], S, S, generator=g) * 2 - 1).contiguous()
    labels = torch.tensor([2, 0, 1, 2], dtype=torch.int64)
    class_weights = torch.tensor([0.5, 1.25, 2.0], dtype=torch.float32)

    decay, keep = [], []
    for name, p in model.named_parameters():
        (keep if no_decay(name, p) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": keep, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    logits = model(images.double())
    loss = F.cross_entropy(logits, labels, weight=class_weights.double(), label_smoothing=SMOOTHING)
    opt.zero_grad()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    opt.step()

    t = {"images": images.float().contiguous(), "labels": labels, "class_weights": class_weights,
         "loss": loss.detach().float().reshape(()), "grad_norm": norm.detach().float().reshape(())}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        t["delta." + k] = (v.detach() - before[k]).float().contiguous()
    meta = {"generator": "test/reference/make_train_step_fixture.py", "torch": torch.__version__,
            "config": json.dumps(cfg), "lr": str(LR), "weight_decay": str(WD), "clip_grad": str(CLIP),
            "label_smoothing": str(SMOOTHING), "weights": "model_small.safetensors",
            "compute_dtype": "float64 (stored float32)"}
    path = os.path.join(FIX, "train_step.safetensors")
    save_fixture(t, path, meta)
    print(f"wrote {path} ({os.path.getsize(path):,} bytes); loss={loss.item():.6f} grad_norm={norm.item():.4f}")


if __name__ == "__main__":
    main()
