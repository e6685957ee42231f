#!/usr/bin/python3
"""Seed streams for fuzz/fuzz_jpeg_lossless.cpp, and the restart-interval test files.

    /usr/bin/python3 fuzz/seeds/make_jpeg_lossless_seeds.py   # from the repository root

Made here, not copied from ../shared/data (which stays out of the repository),
from a 24 x 16 crop of the shared CT slice, each stream a few hundred bytes:

  jpeg_lossless/dcmcjpeg-*.jpg   DCMTK's dcmcjpeg: predictors 1-7, a point transform, 8 bits
  jpeg_lossless/restarts-*.jpg   this script's encoder (dcmcjpeg writes no restart intervals):
                                 restart markers every 2 rows, long Huffman codes, 1 and 3 components

The encoder's streams are also written as DICOM files to test/fixtures/dicom/
(jpeg_lossless_restarts_*.dcm), where the suite checks that our decoder and
DCMTK's codec read them alike. Needs python3-pydicom, numpy and dcmcjpeg.
"""
import os
import subprocess
import tempfile

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(ROOT))
OUT = os.path.join(ROOT, "jpeg_lossless")
FIXTURES = os.path.join(REPO, "test", "fixtures", "dicom")
CT = os.path.join(REPO, "..", "shared", "data", "dicom", "cornerstoneWADOImageLoader", "testImages",
                  "CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm")


def dataset(arr, photometric, signed, syntax):
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 3 if arr.ndim == 3 else 1
    if arr.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = arr.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    return ds


# A valid table with codes of 2 to 16 bits, so that decoders meet long codes:
# (length, symbols) in canonical order.
CODE_LENGTHS = [(2, [0, 1]), (3, [2, 3]), (4, [4, 5]), (5, [6, 7]), (6, [8, 9]), (7, [10, 11]), (8, [12, 13]),
                (12, [14]), (14, [15]), (16, [16])]


def huffman_codes():
    codes, code, prev = {}, 0, 0
    for length, symbols in CODE_LENGTHS:
        code <<= length - prev
        prev = length
        for s in symbols:
            codes[s] = (code, length)
            code += 1
    return codes


class BitWriter:
    def __init__(self):
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, value, bits):
        for i in range(bits - 1, -1, -1):
            self.acc = self.acc << 1 | (value >> i) & 1
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc, self.n = 0, 0

    def pad(self):  # to a byte boundary with 1 bits (T.81 F.1.2.3)
        while self.n:
            self.put(1, 1)


def encode(img, precision, predictor, pt, rows_per_restart):
    """T.81 process 14, one scan, components interleaved, a restart every rows_per_restart rows."""
    img = img.reshape(img.shape[0], img.shape[1], -1).astype(np.int64) >> pt
    h, w, nc = img.shape
    codes = huffman_codes()
    bits = BitWriter()
    for y in range(h):
        first = y % rows_per_restart == 0
        if first and y:
            bits.pad()
            bits.out += bytes([0xFF, 0xD0 + (y // rows_per_restart - 1) % 8])
        for x in range(w):
            for c in range(nc):
                ra = img[y, x - 1, c] if x else 0
                rb = img[y - 1, x, c] if y else 0
                rc = img[y - 1, x - 1, c] if x and y else 0
                if first:
                    pred = ra if x else 1 << (precision - pt - 1)
                elif x == 0:
                    pred = rb
                else:
                    pred = [0, ra, rb, rc, ra + rb - rc, ra + ((rb - rc) >> 1), rb + ((ra - rc) >> 1),
                            (ra + rb) >> 1][predictor]
                d = (img[y, x, c] - pred) & 0xFFFF
                d = d - 0x10000 if d > 0x8000 else d
                ssss = int(abs(d)).bit_length()
                code, length = codes[ssss]
                bits.put(code, length)
                if 0 < ssss < 16:
                    bits.put(d if d > 0 else d + (1 << ssss) - 1, ssss)
    bits.pad()
    dht = bytes([0x00]) + bytes(sum(len(s) for l, s in CODE_LENGTHS if l == n) for n in range(1, 17)) + \
        bytes(s for _, symbols in CODE_LENGTHS for s in symbols)
    sof = bytes([precision]) + h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([nc]) + \
        b"".join(bytes([c + 1, 0x11, 0]) for c in range(nc))
    sos = bytes([nc]) + b"".join(bytes([c + 1, 0x00]) for c in range(nc)) + bytes([predictor, 0, pt])
    dri = (rows_per_restart * w).to_bytes(2, "big")

    def segment(marker, body):
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    return (b"\xFF\xD8" + segment(0xC4, dht) + segment(0xC3, sof) + segment(0xDD, dri) + segment(0xDA, sos) +
            bytes(bits.out) + b"\xFF\xD9")


def first_fragment(path):
    ds = pydicom.dcmread(path)
    return next(pydicom.encaps.generate_pixel_data_frame(ds.PixelData))


def main():
    os.makedirs(OUT, exist_ok=True)
    ct = pydicom.dcmread(CT)
    crop = ct.pixel_array[200:216, 240:264].astype(np.int16)  # 16 rows x 24 columns, signed
    with tempfile.TemporaryDirectory() as tmp:
        src16, src8 = os.path.join(tmp, "ct16.dcm"), os.path.join(tmp, "ct8.dcm")
        ds = dataset(crop, "MONOCHROME2", True, ExplicitVRLittleEndian)
        ds.PixelData = crop.tobytes()
        ds.save_as(src16, write_like_original=False)
        crop8 = ((crop.astype(np.int32) - crop.min()) * 255 // max(1, int(crop.max()) - int(crop.min()))).astype(np.uint8)
        ds = dataset(crop8, "MONOCHROME2", False, ExplicitVRLittleEndian)
        ds.PixelData = crop8.tobytes()
        ds.save_as(src8, write_like_original=False)
        variants = [("sv1", src16, ["+e1"])] + [("p%d" % p, src16, ["+el", "+sv", str(p)]) for p in range(2, 8)] + \
            [("p6-pt3", src16, ["+el", "+sv", "6", "+pt", "3"]), ("8bit", src8, ["+e1"])]
        for name, src, flags in variants:
            out = os.path.join(tmp, name + ".dcm")
            subprocess.run(["dcmcjpeg"] + flags + ["+un", src, out], check=True)
            with open(os.path.join(OUT, "dcmcjpeg-%s.jpg" % name), "wb") as f:
                f.write(first_fragment(out))

    rgb = np.stack([crop8, crop8[::-1], 255 - crop8], axis=-1)
    made = [("grey-p5", crop.view(np.uint16), 16, 5, 0, False), ("rgb-p7-pt1", rgb, 8, 7, 1, True)]
    for name, img, precision, predictor, pt, colour in made:
        stream = encode(img, precision, predictor, pt, 2)
        with open(os.path.join(OUT, "restarts-%s.jpg" % name), "wb") as f:
            f.write(stream)
        pixels = img.view(np.int16) if not colour else img
        ds = dataset(pixels, "RGB" if colour else "MONOCHROME2", not colour, "1.2.840.10008.1.2.4.57")
        ds.PixelData = encapsulate([stream])
        ds["PixelData"].is_undefined_length = True
        ds["PixelData"].VR = "OB"
        ds.save_as(os.path.join(FIXTURES, "jpeg_lossless_restarts_%s.dcm" % name), write_like_original=False)
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
