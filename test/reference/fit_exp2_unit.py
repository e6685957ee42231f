#!/usr/bin/env python3
"""Fits the degree-4 polynomial of the AVX-512 inference scan's coarse exp
(lib/ops/selective_scan_avx512.cpp): 2^f on [0, 1], the interval vreduceps gives
(f = x - floor(x)), near-minimax in relative error by Lawson's iteratively reweighted
least squares on Chebyshev nodes. Prints the coefficients (constant term first) and the
worst relative error, in double and evaluated in float32 by Horner's rule as the C++ does.

    /usr/bin/python3 test/reference/fit_exp2_unit.py
"""
import numpy as np

f = (np.cos(np.linspace(0, np.pi, 2001)) + 1.0) * 0.5
y = 2.0 ** f
V = np.vstack([f ** k for k in range(5)]).T
w = np.ones_like(f)
for _ in range(200):
    sw = np.sqrt(w) / y
    c, *_ = np.linalg.lstsq(V * sw[:, None], y * sw, rcond=None)
    e = np.abs(V @ c - y) / y
    w = w * e
    w /= w.sum()

grid = np.linspace(0.0, 1.0, 200001)
print("coefficients:", ", ".join(f"{x:.8g}" for x in c))
print("max relative error (double):", np.max(np.abs(np.polyval(c[::-1], grid) - 2 ** grid) / 2 ** grid))
g32 = grid.astype(np.float32)
c32 = [np.float32(float(f"{x:.8g}")) for x in c]
p = c32[4]
for k in (3, 2, 1, 0):
    p = p * g32 + c32[k]
exact = 2.0 ** g32.astype(np.float64)
print("max relative error (float32 Horner):", np.max(np.abs(p.astype(np.float64) - exact) / exact))
