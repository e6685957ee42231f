"""Reads a safetensors file written by our C++ writer with Python's `safetensors`
package and checks the values test_safetensors.cpp put there. Exit 0 on success."""
import json
import sys

import numpy as np
from safetensors import safe_open

path = sys.argv[1]
with safe_open(path, framework="np") as f:
    meta = f.metadata()
    assert json.loads(meta["config"]) == {"x": 1}, meta
    w = f.get_tensor("weight")
    assert w.dtype == np.float32 and w.shape == (3, 2), (w.dtype, w.shape)
    np.testing.assert_array_equal(w.ravel(), np.arange(6, dtype=np.float32) + 0.25)
    assert "half" in f.keys()
with safe_open(path, framework="np") as f:
    pass
print("python safetensors read", path, "ok")
