"""Near-minimax polynomial fits in relative error, shared by the fit_*.py scripts: Lawson's
iteratively reweighted least squares on the given nodes (Chebyshev nodes in the callers)."""
import numpy as np


def lawson_relative_fit(x, y, degree, iterations):
    """Coefficients (constant first) of the degree-`degree` polynomial whose largest relative
    error to y at the nodes x is near its minimum."""
    V = np.vstack([x ** k for k in range(degree + 1)]).T
    w = np.ones_like(x)
    for _ in range(iterations):
        sw = np.sqrt(w) / y
        c, *_ = np.linalg.lstsq(V * sw[:, None], y * sw, rcond=None)
        e = np.abs(V @ c - y) / y
        w = w * e
        w /= w.sum()
    return c
