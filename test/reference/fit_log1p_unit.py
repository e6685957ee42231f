#!/usr/bin/env python3
"""Fits the softplus polynomial of the AVX-512 inference scan (softplus_coarse in
lib/ops/selective_scan_avx512.cpp): log1p(t) = t*r(t) for t = e^-|x| in (0, 1], r of degree 6
near-minimax in relative error to log1p(t)/t (Lawson's iteratively reweighted least squares
on Chebyshev nodes). t*r(t) keeps the relative accuracy for tiny t, where softplus(x) ~ e^x.

Prints the coefficients (constant first, 9 digits, as the C++ has them) and the worst relative
error of t*r(t), evaluated in float32 by Horner's rule from those (1.4e-6).

    /usr/bin/python3 test/reference/fit_log1p_unit.py
"""
import numpy as np

from lawson_fit import lawson_relative_fit


def fit(degree=6, iterations=300):
    t = (np.cos(np.linspace(0, np.pi, 4001)) + 1) * 0.5
    t = t[t > 1e-12]
    return lawson_relative_fit(t, np.log1p(t) / t, degree, iterations)


c32 = [np.float32(float(f"{x:.9g}")) for x in fit()]
print("coefficients:", ", ".join(f"{float(x):.9g}" for x in c32))
t = np.linspace(0, 1, 200001).astype(np.float32)[1:]
r = c32[-1]
for k in range(len(c32) - 2, -1, -1):
    r = r * t + c32[k]
exact = np.log1p(t.astype(np.float64))
print("max relative error of t*r(t) (float32 Horner):", np.max(np.abs((r * t).astype(np.float64) - exact) / exact))
