#!/usr/bin/env python3
"""Trains the PyTorch reference MedMamba (test/reference/medmamba.py) on a packed
dataset, for the benchmark table and the shipped demo model (mm-train does not
exist yet). Runs on the GPU machine with torch 2.x; CPU works but is slow.

    python train_reference.py --data .device-data/brain_mri_96.npz --size 96 \
        --dims 32 64 128 256 --depths 2 2 4 2 --epochs 30 --out brain.pth

Data: an .npz with train_images (N,h,w) uint8 grey and train_labels (N,) or (N,1)
(MedMNIST layout, or what pack_training_data.py writes), plus test_images/labels.
Preprocessing matches the reference training script and our C++ pipeline:
resize to --size (bilinear; upsampling from 28x28 for MedMNIST), scale to [0,1],
normalize with mean 0.5 / std 0.5, grey repeated to 3 channels.
Training: AdamW (lr 1e-3, wd 0.05 except norms/biases/A_logs/Ds), cosine decay
with a one-epoch warm-up, random horizontal flips, drop path 0.1, bf16 autocast.
Writes the state dict (torch.save zip format) and, beside it, <out>.test.csv with
PyTorch's test-set probabilities; prints test accuracy.
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import medmamba  # noqa: E402


def prepare(images, size, device):
    x = torch.from_numpy(np.asarray(images)).float().div_(255.0).unsqueeze(1)  # (N,1,h,w) in [0,1]
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - 0.5) / 0.5
    return x.expand(-1, 3, -1, -1).contiguous().to(device)


def param_groups(model, wd):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(("A_logs", "Ds", "dt_projs_bias")) else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--dims", type=int, nargs=4, default=[96, 192, 384, 768])
    ap.add_argument("--depths", type=int, nargs=4, default=[2, 2, 4, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--max-seconds", type=float, default=1e9, help="stop starting epochs after this")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = np.load(a.data)
    ytr = torch.from_numpy(d["train_labels"].reshape(-1).astype(np.int64)).to(dev)
    xtr = prepare(d["train_images"], a.size, dev)
    xte = prepare(d["test_images"], a.size, dev)
    yte = d["test_labels"].reshape(-1).astype(np.int64)
    k = int(max(ytr.max().item(), yte.max())) + 1
    model = medmamba.VSSM(dims=a.dims, depths=a.depths, num_classes=k, drop_path_rate=0.1).to(dev)
    model.set_scan_impl("chunked" if dev.type == "cuda" else "auto")
    opt = torch.optim.AdamW(param_groups(model, a.wd), lr=a.lr)
    steps_per_epoch = math.ceil(len(ytr) / a.batch)
    total = steps_per_epoch * a.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / steps_per_epoch) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    t0 = time.time()
    for epoch in range(a.epochs):
        if time.time() - t0 > a.max_seconds:
            print(f"stopping after {epoch} epochs (time limit)", flush=True)
            break
        model.train()
        perm = torch.randperm(len(ytr), device=dev)
        total_loss = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * a.batch:(i + 1) * a.batch]
            x, y = xtr[idx], ytr[idx]
            flip = torch.rand(len(idx), device=dev) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            with torch.autocast(**amp):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
        print(f"epoch {epoch + 1} loss {total_loss / len(ytr):.4f} {time.time() - t0:.0f}s", flush=True)

    model.eval()
    probs = []
    with torch.no_grad():
        for i in range(0, len(xte), 256):
            probs.append(F.softmax(model(xte[i:i + 256]).float(), dim=1).cpu())
    probs = torch.cat(probs).numpy()
    acc = float((probs.argmax(1) == yte).mean())
    print(f"test accuracy (PyTorch, fp32 eval) {acc:.4f} on {len(yte)} images", flush=True)
    torch.save(model.cpu().state_dict(), a.out)
    names = d["test_paths"] if "test_paths" in d.files else [str(i) for i in range(len(yte))]
    with open(a.out + ".test.csv", "w") as f:
        f.write("path,label," + ",".join(f"prob_{c}" for c in range(k)) + "\n")
        for n, y, p in zip(names, yte, probs):
            f.write(f"{n},{y}," + ",".join(f"{v:.9g}" for v in p) + "\n")


if __name__ == "__main__":
    main()
