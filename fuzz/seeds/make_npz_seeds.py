#!/usr/bin/python3
"""Seed archives for fuzz/fuzz_npz.cpp.

    /usr/bin/python3 fuzz/seeds/make_npz_seeds.py   # from the repository root

MedMNIST-style .npz files (<split>_images uint8, <split>_labels integers for the
splits train, val and test), each a few KB, written with fixed zip timestamps so
that a rerun gives the same bytes:

  npz/grey_stored.npz          (N,8,8) images, (N,1) int64 labels, stored members (as np.savez writes them)
  npz/rgb_deflated.npz         (N,8,8,3) images, (N,1) uint8 labels, deflated (as np.savez_compressed)
  npz/volumes_multilabel.npz   (N,4,8,8) volumes, (N,3) int32 labels (multi-label), deflated
  npz/other_arrays_v2_v3.npz   .npy format versions 2 and 3, float and 1-D members, no splits
  npz/bare_v1.npy              a bare .npy (the target parses its input as one too)

Needs numpy.
"""
import io
import os
import zipfile

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "npz")
rng = np.random.default_rng(7)


def npy(arr, version=None):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), version=version, allow_pickle=False)
    return buf.getvalue()


def write_npz(name, members, deflate):
    """members: {array name: .npy bytes}, in order."""
    with zipfile.ZipFile(os.path.join(OUT, name), "w") as z:
        for key, data in members.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            z.writestr(info, data)


def medmnist(item_shape, label_dtype, label_columns, counts=(3, 2, 2)):
    members = {}
    for split, n in zip(("train", "val", "test"), counts):
        members[split + "_images"] = npy(rng.integers(0, 256, (n,) + item_shape, dtype=np.uint8))
        members[split + "_labels"] = npy(rng.integers(0, 4, (n, label_columns)).astype(label_dtype))
    return members


os.makedirs(OUT, exist_ok=True)
write_npz("grey_stored.npz", medmnist((8, 8), np.int64, 1), deflate=False)
write_npz("rgb_deflated.npz", medmnist((8, 8, 3), np.uint8, 1), deflate=True)
write_npz("volumes_multilabel.npz", medmnist((4, 8, 8), np.int32, 3), deflate=True)
write_npz("other_arrays_v2_v3.npz", {
    "weights_f4": npy(rng.standard_normal((2, 3)).astype("<f4"), version=(2, 0)),
    "ids_u2": npy(np.arange(5, dtype="<u2"), version=(3, 0)),
    "flags": npy(np.array([True, False, True])),
}, deflate=True)
with open(os.path.join(OUT, "bare_v1.npy"), "wb") as f:
    f.write(npy(np.arange(-3, 3, dtype="<i8").reshape(2, 3)))
