#!/usr/bin/env python3
"""Fits the cubic of the AVX-512 inference scan's decay exp (exp2_decay_coarse in
lib/ops/selective_scan_avx512.cpp). The kernel takes x5 = x + 1/2 and g = x5 - floor(x5) in
[0, 1) (vreduceps), so 2^x = 2^floor(x5) * 2^t with t = g - 1/2 in [-1/2, 1/2). The cubic is
p(g) = 1 + t*q(t), q a quadratic near-minimax in relative error to (2^t - 1)/t (Lawson's
iteratively reweighted least squares on Chebyshev nodes), expanded in powers of g: pinned to 1
at t = 0, its error shrinks with |t|, so a slow decay (x near an integer, above all near 0) does
not pile up error over the many steps its state remembers.

Prints the coefficients in g (constant first, 9 digits, as the C++ has them) and, evaluated in
float32 by Horner's rule from those: the worst relative error of 2^t (1.8e-4), the worst of
(relative error)/|t| (3.6e-4) and the worst for |t| < 0.01 (5.4e-7, float rounding).

    /usr/bin/python3 test/reference/fit_exp2_pinned.py
"""
import numpy as np
from numpy.polynomial import polynomial as P

from lawson_fit import lawson_relative_fit


def fit_q(degree=2, iterations=300):
    t = 0.5 * np.cos(np.linspace(0, np.pi, 4001))
    t = t[np.abs(t) > 1e-9]
    return lawson_relative_fit(t, (2.0 ** t - 1) / t, degree, iterations)


q = fit_q()
in_t = np.concatenate([[1.0], q])                      # p = 1 + t*q(t), constant first
in_g = P.Polynomial(in_t)(P.Polynomial([-0.5, 1.0])).coef  # substitute t = g - 1/2
c32 = [np.float32(float(f"{x:.9g}")) for x in in_g]
print("coefficients in g:", ", ".join(f"{float(x):.9g}" for x in c32))

g = np.linspace(0, 1, 400001).astype(np.float32)
p = c32[-1]
for k in range(len(c32) - 2, -1, -1):
    p = p * g + c32[k]
t = g.astype(np.float64) - 0.5
exact = 2.0 ** t
rel = np.abs(p.astype(np.float64) - exact) / exact
away = np.abs(t) > 1e-3
print("max relative error (float32 Horner):", rel.max())
print("max relative error / |t| (|t| > 1e-3):", (rel[away] / np.abs(t[away])).max())
print("max relative error for |t| < 0.01:", rel[np.abs(t) < 0.01].max())
