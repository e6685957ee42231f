#!/usr/bin/python3
"""Seeds for fuzz/fuzz_dicom.cpp on the decoding paths added for issue 10:
VOI and Modality LUT Sequences, YBR_PARTIAL_422, deflated image frames
(1.2.840.10008.1.2.8.1) and 1-bit RLE. Each a 16 x 16 image of a few hundred
bytes, like the seeds of make_imaging_seeds.py (whose dataset() and save() it uses).

    /usr/bin/python3 fuzz/seeds/make_dicom_gap_seeds.py   # from the repository root

No HTJ2K seed: nothing installed here encodes HTJ2K (OpenJPEG 2.5 only decodes
it); the JPEG 2000 seed reaches the same OpenJPEG entry points.
"""
import os
import struct
import sys
import zlib

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_imaging_seeds import dataset, save  # noqa: E402

rng = np.random.default_rng(10)


def lut_item(entries, first, bits, data):
    """A LUT with its descriptor as US, a negative first value as its 16 bits
    (as mlut_18.dcm has it: the reader takes the sign from the pixels)."""
    item = Dataset()
    item.add_new(0x00283002, "US", [entries, first & 0xFFFF, bits])
    item.add_new(0x00283006, "OW", np.asarray(data, "<u2").tobytes())
    return item


def one_bit_frames(frames):
    """Two 16 x 16 1-bit frames, each packed on its own (frames start on a byte)."""
    bits = rng.integers(0, 2, (frames, 256)).astype(np.uint8)
    return [np.packbits(b, bitorder="little").tobytes() for b in bits]


def one_bit_dataset(frames):
    ds = dataset(np.zeros((16, 16), np.uint8), frames=frames)
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    return ds


def rle_frame(raw):
    """PackBits as literal runs of up to 128 bytes, behind the 64-byte RLE header."""
    body = b"".join(bytes([len(raw[i:i + 128]) - 1]) + raw[i:i + 128] for i in range(0, len(raw), 128))
    return struct.pack("<16I", 1, 64, *([0] * 14)) + body


def main():
    u8 = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    voi = dataset(u8)
    voi.VOILUTSequence = [lut_item(256, 0, 16, (np.arange(256) ** 2).astype(np.uint16))]
    save(voi, "voi_lut.dcm")

    ct = rng.integers(-2048, 2048, (16, 16)).astype(np.int16)
    mlut = dataset(ct, signed=True, bits_stored=12)
    mlut.ModalityLUTSequence = [lut_item(4096, -2048, 16, np.arange(4096, dtype=np.uint16) * 16)]
    mlut.ModalityLUTSequence[0].ModalityLUTType = "HU"
    save(mlut, "modality_lut.dcm")

    ybr = dataset(rng.integers(16, 236, (16, 8, 4), dtype=np.uint8), "YBR_FULL")
    ybr.PhotometricInterpretation = "YBR_PARTIAL_422"
    save(ybr, "ybr_partial_422.dcm")

    frames = one_bit_frames(2)
    deflated = one_bit_dataset(2)
    deflated.PixelData = encapsulate([zlib.compress(f)[2:-4] for f in frames], has_bot=True)  # raw deflate
    deflated["PixelData"].VR = "OB"
    # pydicom 3.0 writes no file of this syntax: written as JPEG baseline, whose
    # UID has the same padded length, and the UID swapped in the file meta.
    path = save(deflated, "deflated_image_frames.dcm", JPEGBaseline8Bit)
    with open(path, "rb") as f:
        data = f.read()
    assert data.count(b"1.2.840.10008.1.2.4.50") == 1
    with open(path, "wb") as f:
        f.write(data.replace(b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.8.1\0"))

    rle = one_bit_dataset(2)
    rle.PixelData = encapsulate([rle_frame(f) for f in frames], has_bot=True)
    rle["PixelData"].VR = "OB"
    save(rle, "rle_one_bit.dcm", RLELossless)


if __name__ == "__main__":
    main()
