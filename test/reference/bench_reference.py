#!/usr/bin/python3
"""Throughput of the PyTorch reference MedMamba (test/reference/medmamba.py).

    /usr/bin/python3 test/reference/bench_reference.py --variant T --batch 8 --size 224 --threads 2
    /usr/bin/python3 test/reference/bench_reference.py --variant T --no-scan          # scan cost removed
    /usr/bin/python3 test/reference/bench_reference.py --mode train                    # fwd+bwd+clip+AdamW step
    python bench_reference.py --device cuda --amp bf16 --batch 64                    # torch 2.x + CUDA
    /usr/bin/python3 test/reference/bench_reference.py --quantize int8 --threads 1    # dynamic int8 Linears

Prints one line (extra key=value fields follow img/s):
    torch-reference variant=T batch=8 size=224 threads=2 img/s=12.34 mode=infer device=cpu amp=none scan=loop ...

--mode infer: model.eval(), torch.no_grad(), forward only.
--mode train: model.train() (BatchNorm batch stats, drop path 0.1 as in the
  reference), cross-entropy on random labels, backward, clip_grad_norm_(1.0), AdamW step (mm-train's step).
--no-scan (= --scan noop) replaces the selective scan by y = D*u (the x/dt
  projections, cross-scan and merge stay), to measure the scan's share.
Works with Debian's torch 1.13 (CPU) and torch 2.x (CPU/CUDA).
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import medmamba  # noqa: E402

NAMES = {"t": "T", "tiny": "T", "s": "S", "small": "S", "b": "B", "base": "B"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="T", help="T|S|B (or tiny|small|base)")
    ap.add_argument("--dims", help="custom widths, e.g. 32,64,128,256 (with --depths; replaces --variant)")
    ap.add_argument("--depths", help="custom depths, e.g. 2,2,4,2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--mode", choices=["infer", "train"], default="infer")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["none", "bf16", "fp16", "tf32"], default="none",
                    help="tf32: no autocast, float32 matmuls and convolutions on TF32 tensor cores")
    ap.add_argument("--scan", choices=["auto", "loop", "chunked", "noop"], default="auto",
                    help="selective-scan implementation (auto: loop on CPU; on CUDA chunked for a small "
                         "per-step state Bt*K*D*N < 2^18, else loop)")
    ap.add_argument("--no-scan", action="store_true", help="same as --scan noop")
    ap.add_argument("--quantize", choices=["none", "int8"], default="none",
                    help="int8: torch.ao.quantization.quantize_dynamic on every nn.Linear (CPU, --mode infer)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3, help="minimum timed iterations")
    ap.add_argument("--min-time", type=float, default=0.0, help="keep iterating until this many seconds")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    variant = NAMES.get(a.variant.lower(), a.variant.upper())
    if variant not in medmamba.VARIANTS:
        ap.error(f"unknown variant {a.variant}")
    if a.threads:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    dev = torch.device(a.device)
    if a.amp == "tf32":  # (cuDNN convolutions already default to TF32; matmuls do not)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    scan = "noop" if a.no_scan else a.scan
    torch.manual_seed(a.seed)

    if a.dims:
        variant = f"dims={a.dims}:depths={a.depths}"
        model = medmamba.VSSM(dims=[int(v) for v in a.dims.split(",")], depths=[int(v) for v in a.depths.split(",")],
                              num_classes=a.num_classes)
    else:
        model = medmamba.medmamba(variant, num_classes=a.num_classes)
    model = model.to(dev).set_scan_impl(scan)
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
    labels = torch.randint(0, a.num_classes, (a.batch,), device=dev)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.amp)
    use_scaler = a.amp == "fp16" and dev.type == "cuda"
    scaler = torch.cuda.amp.GradScaler() if use_scaler else None

    def autocast():
        if amp_dtype is None:
            return torch.autocast(device_type=dev.type, enabled=False)
        return torch.autocast(device_type=dev.type, dtype=amp_dtype)

    if a.mode == "infer":
        model.eval()
        if a.quantize == "int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)

        def step():
            with torch.no_grad(), autocast():
                return model(x)
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(model(x), labels)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            return loss

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(a.warmup):
        step()
    sync()
    n = 0
    t0 = time.perf_counter()
    while n < a.iters or time.perf_counter() - t0 < a.min_time:
        step()
        n += 1
        sync()
    dt = time.perf_counter() - t0
    ips = n * a.batch / dt
    extra = ""
    if dev.type == "cuda":
        extra = f" gpu={torch.cuda.get_device_name(dev).replace(' ', '_')}" \
                f" peak_mem_MiB={torch.cuda.max_memory_allocated(dev) / 2**20:.0f}"
    print(f"torch-reference variant={variant} batch={a.batch} size={a.size} threads={threads} img/s={ips:.3f}"
          f" mode={a.mode} device={dev.type} amp={a.amp} quantize={a.quantize} scan={scan} iters={n} sec/iter={dt / n:.4f}"
          f" torch={torch.__version__}{extra}", flush=True)


if __name__ == "__main__":
    main()
