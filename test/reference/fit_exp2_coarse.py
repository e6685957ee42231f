#!/usr/bin/env python3
"""Fits exp2_nonpos_coarse's degree-4 polynomial (lib/ops/vector_math.h): 2^f on [-0.5, 0.5],
near-minimax in relative error by Lawson's iteratively reweighted least squares on Chebyshev
nodes. Prints the coefficients (constant term first) and the worst relative error, in double
and evaluated in float32 by Horner's rule as the C++ does (2.6e-6 and 2.7e-6).

    /usr/bin/python3 test/reference/fit_exp2_coarse.py

fit_exp2_unit.py fits the same polynomial on [0, 1] with fit() and report() from here.
"""
import numpy as np

from lawson_fit import lawson_relative_fit


def fit(lo, hi, degree=4, iterations=200):
    """Coefficients (constant first) of the near-minimax relative-error fit of 2^f on [lo, hi]."""
    f = lo + (np.cos(np.linspace(0, np.pi, 2001)) + 1.0) * 0.5 * (hi - lo)
    return lawson_relative_fit(f, 2.0 ** f, degree, iterations)


def report(c, lo, hi, float32_coefficients):
    """Prints the coefficients and the worst relative errors on [lo, hi], in double and in a
    float32 Horner evaluation with float32_coefficients."""
    grid = np.linspace(lo, hi, 200001)
    print("coefficients:", ", ".join(f"{x:.8g}" for x in c))
    print("max relative error (double):", np.max(np.abs(np.polyval(c[::-1], grid) - 2 ** grid) / 2 ** grid))
    g32 = grid.astype(np.float32)
    p = float32_coefficients[-1]
    for k in range(len(c) - 2, -1, -1):
        p = p * g32 + float32_coefficients[k]
    exact = 2.0 ** g32.astype(np.float64)
    print("max relative error (float32 Horner):", np.max(np.abs(p.astype(np.float64) - exact) / exact))


if __name__ == "__main__":
    c = fit(-0.5, 0.5)
    report(c, -0.5, 0.5, [np.float32(x) for x in c])
