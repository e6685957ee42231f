#!/usr/bin/python3
"""Reference decodings of the shared DICOM and NIfTI files, from independent readers.

Writes test/fixtures/pixels/dicom.json and nifti.json: for each file, what
pydicom (DICOM) or nibabel (NIfTI) decodes, as the SHA-256 of the float32
array plus its shape, statistics and a few sample values, so that the C++ tests
can check our decoders without committing the arrays themselves.

    /usr/bin/python3 test/reference/dump_pixel_references.py   # from the repository root

Needs Debian's python3-pydicom, python3-nibabel, python3-pil (and python3-gdcm
for JPEG-LS and 12-bit/lossless JPEG, which neither numpy nor Pillow decode).
dicom.json was made with Debian's pydicom 2.3: pydicom 3 routes the legacy
handlers through its new decoders and converts YBR itself, which changes 40
of its records. The `dicom-gaps` part (dicom_gaps.json, and the fixture
test/fixtures/dicom/ybr_partial_422.dcm) needs pydicom 3.0 with
pylibjpeg-openjpeg and python-gdcm.

What "decoded" means, matching lib/imaging (see docs/input-formats.md):
- DICOM: every frame, (frames, rows, columns, channels) float32; grey pixels
  after the Modality LUT (pydicom's apply_modality_lut), MONOCHROME1 NOT
  inverted; colour as RGB (YBR_FULL/YBR_FULL_422 through pydicom's
  convert_color_space, PALETTE COLOR through apply_color_lut).
- NIfTI: the volume (4-D: the first) reoriented to the closest canonical RAS+
  orientation (nibabel's as_closest_canonical), scl_slope/scl_inter applied
  (get_fdata), as float32 in (x, y, z) order flattened x-fastest; complex data
  as magnitude.
"""
import hashlib
import json
import os
import sys
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
OUT = os.path.join(ROOT, "test", "fixtures", "pixels")

# Transfer syntaxes whose decoded values depend on the decoder's arithmetic
# (IDCT, colour conversion): the tests compare these with a tolerance.
LOSSY = {
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless (exact in principle; kept loose)
    "1.2.840.10008.1.2.4.91",  # JPEG 2000 (lossy)
    "1.2.840.10008.1.2.4.203",  # HTJ2K
}


def summary(arr):
    arr = np.ascontiguousarray(arr, dtype="<f4")
    flat = arr.reshape(-1)
    n = flat.size
    idx = [int(i * (n - 1) // 7) for i in range(8)] if n else []
    finite = flat[np.isfinite(flat)]
    return {
        "shape": list(arr.shape),
        "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
        "min": float(finite.min()) if finite.size else 0.0,
        "max": float(finite.max()) if finite.size else 0.0,
        "mean": float(finite.astype(np.float64).mean()) if finite.size else 0.0,
        "samples": [[i, float(flat[i]) if np.isfinite(flat[i]) else None] for i in idx],  # JSON has no NaN
    }


# ---------------------------------------------------------------- DICOM

def dicom_reference(path):
    import pydicom
    from pydicom.pixel_data_handlers import (gdcm_handler, numpy_handler, pillow_handler,
                                             rle_handler)

    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as e:  # unreadable: our reader must fail cleanly too
        return {"pydicom_error": f"{type(e).__name__}: {e}"[:200]}
    has_pixels = any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if not has_pixels:
        meta = getattr(ds, "file_meta", None)
        if not (meta and "TransferSyntaxUID" in meta) and not any(e.tag.group == 8 for e in ds):
            # force=True "reads" anything: without file meta or any (0008,xxxx) element it was not DICOM
            return {"expect": "not dicom"}
        return {"expect": "no image", "modality": str(ds.get("Modality", ""))}
    fix_big_endian_words(ds)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        # A bare dataset: pydicom needs to be told what dcmread guessed.
        ds.file_meta = getattr(ds, "file_meta", pydicom.dataset.FileMetaDataset())
        ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if ds.is_implicit_VR
                                          else pydicom.uid.ExplicitVRLittleEndian if ds.is_little_endian
                                          else pydicom.uid.ExplicitVRBigEndian)
    tsuid = str(ds.file_meta.TransferSyntaxUID)
    # pydicom's own RLE decoder and Pillow's OpenJPEG come before GDCM, so that
    # GDCM (which our reader uses for JPEG 2000) is only the last resort.
    handlers = [numpy_handler, rle_handler, pillow_handler, gdcm_handler]
    arr, used, errors = None, None, []
    for h in handlers:
        if not h.is_available() or not h.supports_transfer_syntax(tsuid):
            continue
        pydicom.config.pixel_data_handlers = [h]
        try:
            ds._pixel_array = None
            ds._pixel_id = {}
            arr = ds.pixel_array
            used = h.__name__.split(".")[-1]
            break
        except Exception as e:
            errors.append(f"{h.__name__.split('.')[-1]}: {type(e).__name__}: {e}"[:160])
    if arr is None:
        return {"pydicom_error": "; ".join(errors) or "no handler for " + tsuid, "transfer_syntax": tsuid}

    try:
        return finish_dicom(ds, arr, tsuid, used)
    except Exception as e:
        return {"pydicom_error": f"after {used}: {type(e).__name__}: {e}"[:200], "transfer_syntax": tsuid}


def fix_big_endian_words(ds):
    """pydicom 2.3 reads 8-bit pixels and LUT data held in OW words of a big
    endian file without undoing the word byte order (its own _big_endian test
    files decode differently from their little endian twins); swap them here."""
    if ds.is_little_endian:
        return
    if "PixelData" in ds and ds["PixelData"].VR == "OW" and int(ds.get("BitsAllocated", 16)) == 8:
        raw = np.frombuffer(ds.PixelData, dtype=">u2").astype("<u2")
        ds.PixelData = raw.tobytes()
    for colour in ("Red", "Green", "Blue"):
        key = colour + "PaletteColorLookupTableData"
        if key in ds and ds[key].VR == "OW":
            ds[key].value = np.frombuffer(ds[key].value, dtype=">u2").astype("<u2").tobytes()


def correct_bits(arr, ds):
    """Keeps only BitsStored bits below HighBit, sign-extended when signed.
    PS3.5 8.1.1: the other bits are not part of the pixel value. pydicom 2.3
    returns the whole word (pydicom 3 corrects it); our reader and DCMTK do not."""
    allocated = int(ds.BitsAllocated)
    stored = int(ds.get("BitsStored", allocated))
    if arr.dtype.kind not in "iu" or stored >= allocated or allocated == 1:
        return arr
    shift = int(ds.get("HighBit", stored - 1)) + 1 - stored
    v = (arr.astype(np.int64) >> shift) & ((1 << stored) - 1)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        v = np.where(v >= (1 << (stored - 1)), v - (1 << stored), v)
    return v.astype(np.int32 if int(ds.get("PixelRepresentation", 0)) == 1 else np.uint32)


def finish_dicom(ds, arr, tsuid, used):
    from pydicom.pixel_data_handlers.util import (apply_color_lut, apply_modality_lut,
                                                  convert_color_space)
    pi = str(ds.get("PhotometricInterpretation", "")).strip()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    arr = correct_bits(arr, ds)
    if pi in ("YBR_FULL", "YBR_FULL_422"):  # Pillow (draft mode) and GDCM leave YCbCr as it is
        arr = convert_color_space(arr, "YBR_FULL", "RGB")
    if pi == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    elif pi.startswith("MONOCHROME") and "PixelData" in ds:
        arr = apply_modality_lut(arr, ds)
    samples = int(ds.get("SamplesPerPixel", 1))
    channels = 3 if (samples == 3 or pi == "PALETTE COLOR") else 1
    arr = np.asarray(arr).reshape(frames, int(ds.Rows), int(ds.Columns), channels)
    rec = summary(arr)
    rec.update({"transfer_syntax": tsuid, "decoder": used, "photometric": pi,
                "lossy": tsuid in LOSSY or str(ds.get("LossyImageCompression", "00")) == "01"})
    return rec


def dicom_files():
    root = os.path.join(DATA, "dicom")
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith((".txt", ".json", ".md", ".gz", ".xml", ".py")) or f == "DICOMDIR":
                continue
            yield os.path.join(dirpath, f)
    for extra in ("nifti/niivue/enh.dcm",):
        yield os.path.join(DATA, extra)


# ---------------------------------------------------------------- DICOM gaps (pydicom 3)
# dicom.json above was made with Debian's pydicom 2.3 and its pixel_data_handlers;
# the references below (dicom_gaps.json) come from pydicom 3.0's pixels backend
# with the pylibjpeg (OpenJPEG, libjpeg) and GDCM plugins, for the cases the
# first pass left open. Each record names what it holds.

GAP_DIR = "dicom/pydicom-data/data/"
TOSHIBA = "dicom/pylibjpeg-data/ds/JPEG2000Lossless/"
YBR_PARTIAL_FIXTURE = os.path.join(ROOT, "test", "fixtures", "dicom", "ybr_partial_422.dcm")


def pixels_of(path, plugin=""):
    from pydicom.pixels import pixel_array
    opts = {"decoding_plugin": plugin} if plugin else {}
    return pixel_array(path, **opts)


def as_frames(arr, ds):
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    channels = int(ds.get("SamplesPerPixel", 1))
    return np.asarray(arr).reshape(frames, int(ds.Rows), int(ds.Columns), channels)


def error_text(fn):
    try:
        fn()
    except Exception as e:
        return f"{type(e).__name__}: {e}"[:200]
    return None


def write_ybr_partial_422(rgb_path, out_path):
    """SC_rgb.dcm's RGB turned into native YBR_PARTIAL_422 with the forward
    transform of PS3.3 C.7.6.3.1.2 (pydicom has none for YBR_PARTIAL), the
    chroma of each pixel pair averaged: Y1 Y2 Cb Cr per pair."""
    import pydicom
    ds = pydicom.dcmread(rgb_path)
    rgb = ds.pixel_array.astype(np.float64)
    m = np.array([[.2568, .5041, .0979], [-.1482, -.2910, .4392], [.4392, -.3678, -.0714]])
    ybr = rgb @ m.T + np.array([16, 128, 128])
    y = np.clip(np.floor(ybr[..., 0] + 0.5), 0, 255)
    chroma = np.clip(np.floor((ybr[:, 0::2, 1:] + ybr[:, 1::2, 1:]) / 2 + 0.5), 0, 255)
    packed = np.empty((rgb.shape[0], rgb.shape[1] // 2, 4), dtype=np.uint8)
    packed[..., 0], packed[..., 1] = y[:, 0::2], y[:, 1::2]
    packed[..., 2], packed[..., 3] = chroma[..., 0], chroma[..., 1]
    ds.PhotometricInterpretation = "YBR_PARTIAL_422"
    ds.PixelData = packed.tobytes()
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    ds.save_as(out_path, enforce_file_format=True)
    return rgb  # the RGB it came from


def write_voi_function(ct_path, out_path, function):
    """CT_small.dcm's central 64 x 64 with a soft-tissue window (40/400) under
    the VOI LUT Function given (no file in the shared data uses one but LINEAR)."""
    import pydicom
    ds = pydicom.dcmread(ct_path)
    arr = ds.pixel_array[32:96, 32:96].copy()
    ds.Rows, ds.Columns = arr.shape
    ds.PixelData = arr.tobytes()
    ds.WindowCenter, ds.WindowWidth = [40, -600], [400, 1500]
    ds.VOILUTFunction = function
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    ds.save_as(out_path, enforce_file_format=True)
    return out_path


def dicom_gaps():
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    refs = {}

    def rel(p):
        return p if p.startswith("dicom/") else os.path.relpath(p, DATA)

    # VOI LUT Sequence (an 8-bit CR-style table to 16 bits) and Modality LUT Sequence.
    for name in ("vlut_04.dcm", "mlut_18.dcm"):
        path = os.path.join(DATA, GAP_DIR, name)
        ds = pydicom.dcmread(path)
        modality = apply_modality_lut(ds.pixel_array, ds)
        rec = {"modality": summary(as_frames(modality, ds))}
        if ds.get("VOILUTSequence"):
            rec["voi"] = summary(as_frames(apply_voi_lut(modality, ds, index=0, prefer_lut=True), ds))
            rec["voi_bits"] = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        refs[GAP_DIR + name] = rec
    # HTJ2K through OpenJPEG (pylibjpeg-openjpeg).
    for name in ("HTJ2K_08_RGB.dcm", "HTJ2KLossless_08_RGB.dcm"):
        path = os.path.join(DATA, GAP_DIR, name)
        ds = pydicom.dcmread(path)
        refs[GAP_DIR + name] = {"pixels": summary(as_frames(pixels_of(path, "pylibjpeg"), ds)),
                                "transfer_syntax": str(ds.file_meta.TransferSyntaxUID)}
    # Deflated image frames and 1-bit RLE: pydicom decodes neither; the same
    # segmentation stored natively is the reference.
    for name, twin in (("liver_deflate.dcm", "liver.dcm"), ("liver_rle.dcm", "liver.dcm"),
                       ("liver_nonbyte_aligned_deflate.dcm", "liver_nonbyte_aligned.dcm"),
                       ("liver_nonbyte_aligned_rle.dcm", "liver_nonbyte_aligned.dcm")):
        path, twin_path = os.path.join(DATA, GAP_DIR, name), os.path.join(DATA, GAP_DIR, twin)
        ds = pydicom.dcmread(twin_path)
        refs[GAP_DIR + name] = {"pixels": summary(as_frames(pixels_of(twin_path), ds)),
                                "pixels_from": GAP_DIR + twin,
                                "pydicom_error": error_text(lambda: pixels_of(path))}
    # Toshiba JPEG 2000: the stream says signed, PixelRepresentation unsigned.
    for name in ("TOSHIBA_J2K_SIZ1_PixRep0.dcm", "TOSHIBA_J2K_SIZ0_PixRep1.dcm"):
        path = os.path.join(DATA, TOSHIBA, name)
        ds = pydicom.dcmread(path)
        rec = {"pixel_representation": int(ds.PixelRepresentation)}
        for plugin in ("pylibjpeg", "gdcm", "pillow"):
            rec[plugin] = summary(as_frames(pixels_of(path, plugin), ds))
        # The same bits read as two's complement.
        rec["pylibjpeg_as_int16"] = summary(as_frames(pixels_of(path, "pylibjpeg").view(np.int16), ds))
        refs[TOSHIBA + name] = rec
    # Files DCMTK refuses, as pydicom decodes them.
    for path in (os.path.join(DATA, "dicom/pydicom/test_files/SC_rgb_jpeg.dcm"),
                 os.path.join(DATA, GAP_DIR, "JLSL_08_07_0_1F.dcm")):
        ds = pydicom.dcmread(path)  # ds.pixel_array: pixel_array(path) cannot read SC_rgb_jpeg's mixed VR
        refs[rel(path)] = {"pixels": summary(as_frames(ds.pixel_array, ds)),
                           "photometric": str(ds.PhotometricInterpretation)}
    # VOI LUT Functions SIGMOID and LINEAR_EXACT (apply_windowing), each window.
    for function in ("SIGMOID", "LINEAR_EXACT"):
        path = write_voi_function(os.path.join(DATA, "dicom/pydicom/test_files/CT_small.dcm"),
                                  os.path.join(ROOT, "test", "fixtures", "dicom", f"voi_{function.lower()}.dcm"),
                                  function)
        ds = pydicom.dcmread(path)
        modality = apply_modality_lut(ds.pixel_array, ds)
        refs[f"fixture:voi_{function.lower()}.dcm"] = {
            f"window{i}": summary(as_frames(apply_voi_lut(modality, ds, index=i), ds)) for i in (0, 1)}
        # YBR_PARTIAL_422: no file in the shared data has it; a fixture made here.
    rgb = write_ybr_partial_422(os.path.join(DATA, GAP_DIR, "SC_rgb.dcm"), YBR_PARTIAL_FIXTURE)
    refs["fixture:ybr_partial_422.dcm"] = {"source_rgb": summary(rgb.reshape((1,) + rgb.shape)),
                                           "made_from": GAP_DIR + "SC_rgb.dcm"}
    return refs


# ---------------------------------------------------------------- NIfTI

def nifti_reference(path):
    try:
        return nibabel_decoding(path)
    except Exception as e:  # unreadable (or a header without its .img): ours must fail cleanly too
        return {"nibabel_error": f"{type(e).__name__}: {e}"[:200]}


def nibabel_decoding(path):
    import nibabel as nib
    img = nib.load(path)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image, nib.Nifti1Pair, nib.Nifti2Pair,
                            nib.AnalyzeImage)):
        return {"nibabel_error": f"not NIfTI: {type(img).__name__}"}
    shape = img.shape
    if len(shape) > 4 and any(s != 1 for s in shape[4:]):
        return {"expect": "unsupported", "shape": list(shape)}
    dtype = img.get_data_dtype()
    canon = nib.as_closest_canonical(img) if len(shape) >= 3 else img
    if dtype.fields is not None:  # RGB24: a structured dtype
        raw = np.asanyarray(canon.dataobj)
        data = np.stack([raw[n] for n in dtype.names], axis=-1).astype(np.float32)
    elif np.iscomplexobj(np.asanyarray(canon.dataobj[..., 0] if len(shape) > 3 else canon.dataobj)):
        data = np.abs(np.asanyarray(canon.dataobj)).astype(np.float32)
    else:
        data = canon.get_fdata(dtype=np.float64).astype(np.float32)
    while data.ndim > 4 or (data.ndim == 4 and dtype.fields is None):
        data = data[..., 0]  # first volume
    if data.ndim == 2:
        data = data[:, :, None]
    channels = 3 if dtype.fields is not None else 1
    # x fastest: (z, y, x, c) in C order.
    arr = np.transpose(data.reshape(data.shape[:3] + (channels,)), (2, 1, 0, 3))
    rec = summary(arr)
    rec["ornt"] = "".join(nib.aff2axcodes(img.affine)) if len(shape) >= 3 else ""
    rec["datatype"] = str(dtype)
    rec["dims"] = list(shape)
    return rec


def nifti_files():
    root = os.path.join(DATA, "nifti")
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith((".nii", ".nii.gz", ".hdr", ".hdr.gz")):
                yield os.path.join(dirpath, f)


def main():
    os.makedirs(OUT, exist_ok=True)
    warnings.simplefilter("ignore")
    which = sys.argv[1:] or ["dicom", "dicom-gaps", "nifti"]
    if "dicom" in which:
        refs = {os.path.relpath(p, DATA): dicom_reference(p) for p in sorted(dicom_files())}
        with open(os.path.join(OUT, "dicom.json"), "w") as f:
            json.dump(refs, f, indent=0, sort_keys=True)
        print(f"dicom: {len(refs)} files")
    if "dicom-gaps" in which:
        refs = dicom_gaps()
        with open(os.path.join(OUT, "dicom_gaps.json"), "w") as f:
            json.dump(refs, f, indent=0, sort_keys=True)
        print(f"dicom gaps: {len(refs)} files")
    if "nifti" in which:
        refs = {os.path.relpath(p, DATA): nifti_reference(p) for p in sorted(nifti_files())}
        with open(os.path.join(OUT, "nifti.json"), "w") as f:
            json.dump(refs, f, indent=0, sort_keys=True)
        print(f"nifti: {len(refs)} files")


if __name__ == "__main__":
    main()
