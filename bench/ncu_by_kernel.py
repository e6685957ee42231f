#!/usr/bin/env python3
"""Sum an ncu CSV (--metrics gpu__time_duration.sum --csv) by kernel name.

    ncu --metrics gpu__time_duration.sum --csv mm-bench ... > ncu.csv
    python3 bench/ncu_by_kernel.py ncu.csv [--top 30]

Prints the total GPU time and launch count, then one line per kernel (template arguments and
namespaces dropped, cuBLAS's own kernels together as "GEMM (cuBLAS)"), the most time first:
the per-kernel breakdown docs/mm-train.md quotes for a training step.
"""
import argparse
import collections
import csv
import re
import sys

CUBLAS = ("nvjet", "Kernel2", "splitKreduce_kernel", "gemv", "sm90_xmma", "cutlass")


def kernel_name(raw):
    name = raw.replace("(anonymous namespace)::", "").replace("<unnamed>::", "")
    name = re.sub(r"^void ", "", name)
    name = re.split(r"[<(]", name)[0].split("::")[-1]
    return "GEMM (cuBLAS)" if name.startswith(CUBLAS) else name


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    rows = list(csv.reader(open(a.csv, newline="")))
    header = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if header is None:
        sys.exit(f"{a.csv}: no 'Kernel Name' column (not an ncu --csv report?)")
    h = rows[header]
    ki, mi, vi, ui = (h.index(c) for c in ("Kernel Name", "Metric Name", "Metric Value", "Metric Unit"))
    scale = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0}
    by = collections.defaultdict(lambda: [0, 0.0])
    for r in rows[header + 1:]:
        if len(r) <= vi or r[mi] != "gpu__time_duration.sum":
            continue
        ms = float(r[vi].replace(",", "")) * scale.get(r[ui], 1e-6)
        entry = by[kernel_name(r[ki])]
        entry[0] += 1
        entry[1] += ms
    total = sum(t for _, t in by.values())
    print(f"total {total:.2f} ms in {sum(n for n, _ in by.values())} launches")
    for name, (n, t) in sorted(by.items(), key=lambda kv: -kv[1][1])[: a.top]:
        print(f"{name:<44} {n:5d} {t:8.3f} ms {100 * t / total:5.1f}%")


if __name__ == "__main__":
    main()
