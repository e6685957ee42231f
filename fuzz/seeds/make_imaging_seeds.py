#!/usr/bin/python3
"""Small DICOM and NIfTI seed inputs for fuzz/fuzz_dicom.cpp and fuzz/fuzz_nifti.cpp.

    /usr/bin/python3 fuzz/seeds/make_imaging_seeds.py   # from the repository root

Made here, not copied from ../shared/data (which stays out of the repository):
a 16 x 16 image in the layouts and transfer syntaxes the reader handles, each
a few hundred bytes, so that libFuzzer starts from every decoding path.
Needs python3-pydicom, python3-gdcm (compression) and python3-nibabel.
"""
import os

import gdcm
import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         RLELossless, generate_uid)

ROOT = os.path.dirname(os.path.abspath(__file__))
DICOM, NIFTI = os.path.join(ROOT, "dicom"), os.path.join(ROOT, "nifti")
rng = np.random.default_rng(4)


def dataset(arr, photometric="MONOCHROME2", signed=False, bits_stored=None, frames=1, **extra):
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = 16, 16  # every seed image is 16 x 16
    ds.SamplesPerPixel = 3 if photometric in ("RGB", "YBR_FULL") else 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.PixelData = arr.tobytes()
    return ds


def save(ds, name, syntax=ExplicitVRLittleEndian, meta=True):
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.is_little_endian = syntax != ExplicitVRBigEndian
    ds.is_implicit_VR = syntax == ImplicitVRLittleEndian
    if syntax == ExplicitVRBigEndian and ds.BitsAllocated == 16:
        ds.PixelData = np.frombuffer(ds.PixelData, "<u2").astype(">u2").tobytes()
    path = os.path.join(DICOM, name)
    ds.save_as(path, write_like_original=not meta)
    return path


def gdcm_transcode(src, dst, syntax):
    reader = gdcm.ImageReader()
    reader.SetFileName(src)
    assert reader.Read(), src
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(syntax))
    change.SetInput(reader.GetImage())
    assert change.Change(), (src, syntax)
    writer = gdcm.ImageWriter()
    writer.SetFileName(os.path.join(DICOM, dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write(), dst


def main():
    os.makedirs(DICOM, exist_ok=True)
    os.makedirs(NIFTI, exist_ok=True)
    ct = (rng.integers(-1024, 1500, (16, 16))).astype(np.int16)
    ct_ds = dataset(ct, signed=True, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024,
                    WindowCenter=40, WindowWidth=400)
    ct_path = save(ct_ds, "ct_explicit_le.dcm")
    save(dataset(ct, signed=True), "ct_implicit_le.dcm", ImplicitVRLittleEndian)
    save(dataset(ct, signed=True), "ct_big_endian.dcm", ExplicitVRBigEndian)
    save(dataset(ct, signed=True), "ct_no_meta.dcm", meta=False)
    save(dataset(ct.astype(np.uint16) & 0xFFF, "MONOCHROME1", bits_stored=12), "cr_monochrome1.dcm")
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    save(dataset(rgb, "RGB"), "rgb.dcm")
    save(dataset(np.ascontiguousarray(rgb.transpose(2, 0, 1)), "RGB", PlanarConfiguration=1), "rgb_planar.dcm")
    save(dataset(rgb, "YBR_FULL"), "ybr_full.dcm")
    lut = np.arange(256, dtype=np.uint16) * 257
    pal = dataset(rng.integers(0, 256, (16, 16), dtype=np.uint8), "PALETTE COLOR")
    for c in ("Red", "Green", "Blue"):
        setattr(pal, c + "PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(pal, c + "PaletteColorLookupTableData", lut.tobytes())
    save(pal, "palette.dcm")
    save(dataset(rng.integers(0, 256, (3, 16, 16), dtype=np.uint8), frames=3), "multiframe_u8.dcm")
    bits = dataset(np.packbits(rng.integers(0, 2, 256).astype(np.uint8), bitorder="little"))
    bits.BitsAllocated = bits.BitsStored = 1
    bits.HighBit = 0
    save(bits, "one_bit.dcm")
    sr = Dataset()
    sr.SOPClassUID, sr.SOPInstanceUID, sr.Modality = "1.2.840.10008.5.1.4.1.1.88.11", generate_uid(), "SR"
    save(sr, "sr_no_pixels.dcm")
    ct_ds = pydicom.dcmread(ct_path)
    ct_ds.compress(RLELossless)
    ct_ds.save_as(os.path.join(DICOM, "ct_rle.dcm"))
    u8 = save(dataset(rng.integers(0, 256, (16, 16), dtype=np.uint8)), "u8.dcm")
    gdcm_transcode(u8, "u8_jpeg_baseline.dcm", gdcm.TransferSyntax.JPEGBaselineProcess1)
    gdcm_transcode(ct_path, "ct_jpeg_lossless.dcm", gdcm.TransferSyntax.JPEGLosslessProcess14_1)
    gdcm_transcode(ct_path, "ct_jpegls.dcm", gdcm.TransferSyntax.JPEGLSLossless)
    gdcm_transcode(ct_path, "ct_j2k.dcm", gdcm.TransferSyntax.JPEG2000Lossless)

    vol = rng.integers(0, 1000, (6, 5, 4)).astype(np.int16)
    aff = np.array([[0, 0, -2.0, 10], [1.5, 0, 0, -5], [0, 1, 0, 3], [0, 0, 0, 1]])
    img = nib.Nifti1Image(vol, aff)
    img.header.set_slope_inter(0.5, -10)
    nib.save(img, os.path.join(NIFTI, "int16_scaled.nii"))
    nib.save(nib.Nifti1Image(rng.random((4, 3, 2, 3)).astype(np.float32), np.eye(4)), os.path.join(NIFTI, "float_4d.nii"))
    nib.save(nib.Nifti1Image(rng.integers(0, 255, (5, 4)).astype(np.uint8), np.eye(4)), os.path.join(NIFTI, "u8_2d.nii"))
    nib.save(nib.Nifti2Image(vol, aff), os.path.join(NIFTI, "nifti2.nii"))
    for f in sorted(os.listdir(DICOM)) + sorted(os.listdir(NIFTI)):
        print(f)


if __name__ == "__main__":
    main()
