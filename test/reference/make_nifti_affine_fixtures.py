#!/usr/bin/python3
"""NIfTI files with sheared, skewed, oblique and broken affines, and what
nibabel makes of them: test/fixtures/nifti_affine/*.nii.gz and expected.json.

    /usr/bin/python3 test/reference/make_nifti_affine_fixtures.py   # from the repository root

Each file holds a small volume with distinct voxel values, so a wrong
permutation or flip changes the checksum. For each, expected.json holds the
record dump_pixel_references.py writes for the shared files (nibabel's
as_closest_canonical, SHA-256 of the float32 array, x fastest; "ornt" from
aff2axcodes) plus what our reader must report:
  "source": the geometry it must use (sform, qform, none, Analyze);
  "warning": a substring of the warning it must give ("" for none).

Where the header names a source that has no orientation (NaN or huge entries,
rank-deficient sform, quaternion out of range, unknown code), nibabel either
fails or reads something arbitrary; we take the next usable source, so the
expected record is nibabel's reading of the same file with the unusable source
switched off (its code set to 0), and "nibabel_as_is" says what nibabel does
with the file itself. For "none" on a NIfTI file we read the voxel axes as RAS
(NIfTI-1 method 1; docs/input-formats.md): the record is then nibabel's data
without reorientation.
"""
import gzip
import json
import os
import sys
import warnings

import numpy as np
import nibabel as nib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dump_pixel_references import ROOT, nibabel_decoding, summary  # noqa: E402

OUT = os.path.join(ROOT, "test", "fixtures", "nifti_affine")
SHAPE = (5, 6, 7)
FLOAT_MAX = 3.4e38


def volume():
    return np.arange(np.prod(SHAPE), dtype=np.uint8).reshape(SHAPE, order="F")


def rotation(axis, degrees):
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def affine(m):
    a = np.eye(4)
    a[:3, :3] = m
    a[:3, 3] = [-4, 7, 2]
    return a


def column_order_greedy(rzs):
    """nibabel 4's io_orientation: voxel axes in index order (no strength sort)."""
    rs = rzs / np.sqrt((rzs ** 2).sum(axis=0))
    p, _, qs = np.linalg.svd(rs)
    r = p @ qs
    out = []
    for c in range(3):
        row = int(np.argmax(np.abs(r[:, c])))
        out.append((row, r[row, c] < 0))
        r[row, :] = 0
    return out


def strength_order_matters():
    """A sheared matrix whose nearest permutation depends on taking the
    strongest voxel axis first (nibabel 5) rather than axis 0 first."""
    rng = np.random.default_rng(7)
    while True:
        m = rng.normal(size=(3, 3))
        o = nib.orientations.io_orientation(affine(m))
        mine = [(int(a), b < 0) for a, b in o]
        if mine != column_order_greedy(m) and abs(np.linalg.det(m)) > 0.3:
            return np.round(m, 3)


def header_of(img, sform=None, sform_code=None, qform=None, qform_code=None, quatern=None, pixdim0=None):
    h = img.header
    if sform is not None:
        h["srow_x"], h["srow_y"], h["srow_z"] = sform[0], sform[1], sform[2]
    if sform_code is not None:
        h["sform_code"] = sform_code
    if qform is not None:
        h.set_qform(qform, code=1)
    if qform_code is not None:
        h["qform_code"] = qform_code
    if quatern is not None:
        h["quatern_b"], h["quatern_c"], h["quatern_d"] = quatern
    if pixdim0 is not None:
        h["pixdim"][0] = pixdim0


def nifti(name, rzs=None, qform_rzs=None, cls=nib.Nifti1Image, **edits):
    """Writes name.nii.gz: sform from rzs (code 1) unless edits say otherwise,
    qform from qform_rzs (code 1, else 0)."""
    img = cls(volume(), None)
    img.header.set_sform(affine(rzs) if rzs is not None else np.eye(4), code=1 if rzs is not None else 0)
    if qform_rzs is not None:
        img.header.set_qform(affine(qform_rzs), code=1)
    else:
        img.header.set_qform(np.eye(4), code=0)
    header_of(img, **edits)
    path = os.path.join(OUT, name + ".nii.gz")
    # Written with the header as set: nibabel's to_filename would re-derive it from the affine.
    img.update_header = lambda: None
    nib.save(img, path)
    return path


def nibabel_as_is(path):
    try:
        return nibabel_decoding(path)["ornt"]
    except Exception as e:
        return f"{type(e).__name__}: {e}"[:120]


def with_code_zeroed(path, field):
    """nibabel's reading of the file with `field` (sform_code/qform_code) set to 0."""
    img = nib.load(path)
    img.header[field] = 0
    tmp = path + ".tmp.nii.gz"
    img.update_header = lambda: None
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), None, img.header), tmp)
    try:
        return nibabel_decoding(tmp)
    finally:
        os.remove(tmp)


def unreoriented(path):
    """NIfTI-1 method 1 as we read it: the voxel axes are RAS, the data as stored."""
    with gzip.open(path) as f:  # nib.load would build the (broken) qform affine and fail
        header = nib.Nifti1Header.from_fileobj(f)
        data = header.data_from_fileobj(f).astype(np.float32)
    rec = summary(np.transpose(data, (2, 1, 0))[..., None])
    rec["ornt"] = "RAS"
    return rec


def write_fuzz_seeds(sform_rzs, qform_rzs):
    """fuzz/seeds/nifti/: uncompressed (so mutations reach the header fields)
    with both geometries set, one without the NIfTI magic (Analyze 7.5), and
    one gzipped."""
    seeds = os.path.join(ROOT, "fuzz", "seeds", "nifti")
    img = nib.Nifti1Image(volume(), None)
    img.header.set_sform(affine(sform_rzs), code=1)
    img.header.set_qform(affine(qform_rzs), code=1)
    img.update_header = lambda: None
    nib.save(img, os.path.join(seeds, "sheared_sform_oblique_qform.nii"))
    raw = bytearray(open(os.path.join(seeds, "sheared_sform_oblique_qform.nii"), "rb").read())
    raw[344:348] = bytes(4)
    open(os.path.join(seeds, "no_magic_analyze.nii"), "wb").write(raw)
    nib.save(img, os.path.join(seeds, "sheared.nii.gz"))


def main():
    warnings.simplefilter("ignore")
    os.makedirs(OUT, exist_ok=True)
    shear = np.array([[2, 0.4, 0], [0, 2, 0.3], [0.2, 0, 2]])
    skew = rotation(0, 35) @ np.array([[0, 0, -1.5], [-2, 0.6, 0], [0, -2.5, 0.4]])
    oblique_q = rotation(1, 25) @ np.diag([2, 2, -2])  # qfac -1
    expected = {}

    def add(name, path, source, warning="", record=None, **extra):
        rec = record or nibabel_decoding(path)
        rec.update(source=source, warning=warning, **extra)
        expected[os.path.basename(path)] = rec

    add("shear", nifti("shear", shear), "sform")
    add("skew_oblique", nifti("skew_oblique", skew), "sform")
    add("nonorthonormal_negative_det", nifti("nonorthonormal_negative_det",
                                             np.array([[-1, 0.9, 0], [0, 0.2, 3], [0.5, -3, 0.7]])), "sform")
    add("strongest_axis_first", nifti("strongest_axis_first", strength_order_matters()), "sform")
    add("qform_oblique", nifti("qform_oblique", None, oblique_q, pixdim0=-1), "qform")
    add("nifti2_shear", nifti("nifti2_shear", skew @ shear, cls=nib.Nifti2Image), "sform")

    # A source without an orientation: the next one is used, with a warning.
    rank2 = np.array([[2, 2, 0], [0, 0, 0], [0, 0, 2]])
    p = nifti("sform_rank2_qform_fallback", rank2, oblique_q, pixdim0=-1)
    add("", p, "qform", "sform unusable (linearly dependent columns)", record=with_code_zeroed(p, "sform_code"),
        nibabel_as_is=nibabel_as_is(p))
    p = nifti("sform_nan_qform_fallback", np.array([[np.nan, 0, 0], [0, 2, 0], [0, 0, 2]]), oblique_q, pixdim0=-1)
    add("", p, "qform", "sform unusable (non-finite entries)", record=with_code_zeroed(p, "sform_code"),
        nibabel_as_is=nibabel_as_is(p))
    p = nifti("sform_float_max_qform_fallback", np.full((3, 3), FLOAT_MAX), oblique_q, pixdim0=-1)
    add("", p, "qform", "sform unusable (linearly dependent columns)", record=with_code_zeroed(p, "sform_code"),
        nibabel_as_is=nibabel_as_is(p))
    p = nifti("sform_code_unknown", shear, oblique_q, pixdim0=-1, sform_code=9)
    add("", p, "qform", "sform_code 9 is not a NIfTI code", nibabel_as_is=nibabel_as_is(p))
    p = nifti("quaternion_out_of_range", None, oblique_q, quatern=(0.8, 0.8, 0.1))
    add("", p, "none (NIfTI-1 method 1: RAS)", "qform unusable (quaternion (b, c, d) longer than 1)",
        record=unreoriented(p), nibabel_as_is=nibabel_as_is(p))

    # Analyze 7.5: no orientation fields; nibabel (like SPM and FSL) reads it as LAS.
    analyze = nib.AnalyzeImage(volume(), np.diag([2, 2, 2, 1]))
    p = os.path.join(OUT, "analyze.hdr")
    nib.save(analyze, p)
    add("", p, "Analyze 7.5 (LAS)")

    write_fuzz_seeds(skew, oblique_q)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
    for name, rec in sorted(expected.items()):
        print(f"{name:42s} {rec['ornt']}  {rec['source']:30s} nibabel as is: {rec.get('nibabel_as_is', '-')}")


if __name__ == "__main__":
    main()
