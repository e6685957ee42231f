#!/usr/bin/env python3
"""Fits the degree-4 polynomial of the AVX-512 inference scan's coarse exp
(lib/ops/selective_scan_avx512.cpp): 2^f on [0, 1], the interval vreduceps gives
(f = x - floor(x)), near-minimax in relative error by Lawson's iteratively reweighted
least squares on Chebyshev nodes (fit_exp2_coarse.py's fit). Prints the coefficients
(constant term first) and the worst relative error, in double and evaluated in float32 by
Horner's rule from the printed 8-digit coefficients, as the C++ does.

    /usr/bin/python3 test/reference/fit_exp2_unit.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fit_exp2_coarse import fit, report  # noqa: E402

c = fit(0.0, 1.0)
report(c, 0.0, 1.0, [np.float32(float(f"{x:.8g}")) for x in c])
