#!/usr/bin/python3
"""Seed streams for fuzz/fuzz_jpegls.cpp.

    /usr/bin/python3 fuzz/seeds/make_jpegls_seeds.py   # from the repository root

Made here, not copied from ../shared/data (which stays out of the repository),
from a 16 x 24 crop of the shared CT slice (made unsigned: dcmcjpls refuses
signed samples near-lossless), each stream a few hundred bytes:

  jpegls/dcmcjpls-*.jls   DCMTK's dcmcjpls: 16, 12 and 8 bits, lossless, near-lossless, custom thresholds
  jpegls/restarts-*.jls   restart markers every 4 rows: dcmcjpls writes none, but an interval is
                          coded as an image of its own, so each is dcmcjpls's encoding of its rows,
                          spliced after the whole image's headers and a DRI segment

Needs python3-pydicom, numpy and dcmcjpls.
"""
import os
import subprocess
import tempfile

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from make_jpeg_lossless_seeds import CT, dataset, first_fragment

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jpegls")
ROWS_PER_RESTART = 4


def encode(img, bits, flags, tmp):
    """dcmcjpls's stream for a 2-D unsigned array of `bits` bits stored."""
    ds = dataset(img, "MONOCHROME2", False, ExplicitVRLittleEndian)
    ds.BitsStored, ds.HighBit = bits, bits - 1
    ds.PixelData = img.tobytes()
    src, out = os.path.join(tmp, "in.dcm"), os.path.join(tmp, "out.dcm")
    ds.save_as(src, write_like_original=False)
    subprocess.run(["dcmcjpls", "-q"] + flags + [src, out], check=True)
    stream = first_fragment(out)
    return stream[:stream.rindex(b"\xFF\xD9") + 2]  # without DICOM's padding byte


def scan_start(stream):
    at = 2
    while True:
        marker, length = stream[at + 1], int.from_bytes(stream[at + 2:at + 4], "big")
        at += 2 + length
        if marker == 0xDA:
            return at


def with_restarts(img, bits, flags, tmp):
    whole = encode(img, bits, flags, tmp)
    dri = b"\xFF\xDD\x00\x04" + ROWS_PER_RESTART.to_bytes(2, "big")
    out = bytearray(b"\xFF\xD8" + dri + whole[2:scan_start(whole)])
    for k, first in enumerate(range(0, img.shape[0], ROWS_PER_RESTART)):
        part = encode(np.ascontiguousarray(img[first:first + ROWS_PER_RESTART]), bits, flags, tmp)
        if k > 0:
            out += bytes([0xFF, 0xD0 + (k - 1) % 8])
        out += part[scan_start(part):-2]
    return bytes(out + b"\xFF\xD9")


def main():
    os.makedirs(OUT, exist_ok=True)
    crop = pydicom.dcmread(CT).pixel_array[200:216, 240:264].astype(np.int32)  # 16 rows x 24 columns
    span = max(1, int(crop.max() - crop.min()))
    scaled = {bits: ((crop - crop.min()) * ((1 << bits) - 1) // span).astype(np.uint16 if bits > 8 else np.uint8)
              for bits in (16, 12, 8)}
    variants = [("16-lossless", 16, ["+el"]), ("16-near2", 16, ["+en"]), ("12-lossless", 12, ["+el"]),
                ("12-near7", 12, ["+en", "+md", "7"]), ("8-lossless", 8, ["+el"]),
                ("16-thresholds", 16, ["+el", "+t1", "5", "+t2", "12", "+t3", "40", "+rs", "32"])]
    with tempfile.TemporaryDirectory() as tmp:
        for name, bits, flags in variants:
            with open(os.path.join(OUT, "dcmcjpls-%s.jls" % name), "wb") as f:
                f.write(encode(scaled[bits], bits, flags, tmp))
        for name, bits, flags in [("16-lossless", 16, ["+el"]), ("12-near2", 12, ["+en"])]:
            with open(os.path.join(OUT, "restarts-%s.jls" % name), "wb") as f:
                f.write(with_restarts(scaled[bits], bits, flags, tmp))
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
