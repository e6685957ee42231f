#!/usr/bin/python3
"""Folders of N 512x512 CT slices for the end-to-end pipeline benchmark (bench/pipeline.sh).

Every file is the same real CT slice (the cornerstone test image, explicit VR
little endian, by default) with its own SOP Instance UID (also in the file
meta) and Instance Number, one folder per transfer syntax:

  explicit       Explicit VR Little Endian, as the source
  jpeg-lossless  JPEG Lossless process 14, first-order prediction (.4.70), DCMTK's dcmcjpeg
  jpeg-ls        JPEG-LS lossless (.4.80), DCMTK's dcmcjpls
  j2k            JPEG 2000 lossless (.4.90), GDCM's gdcmconv --j2k

Two steps, so that the machine that makes the folders needs neither pydicom
nor the encoders:

  1. templates (pydicom + the encoders): the source with a placeholder SOP
     Instance UID of fixed length and a fixed-width Instance Number, encoded per
     syntax, plus where those values sit in each file (<syntax>.json);
  2. clones (plain Python): N copies of a template with the values patched in
     place, so that no length or offset changes.

  make_ct_folder.py --out DIR --count N [--syntax explicit,jpeg-lossless]
  make_ct_folder.py --write-templates TDIR [--syntax ...]     # step 1 only
  make_ct_folder.py --templates TDIR --out DIR --count N       # step 2 only
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SOURCE = os.path.join(
    HERE, "..", "..", "shared", "data", "dicom", "cornerstoneWADOImageLoader", "testImages",
    "CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm")

# pydicom's UID root, a run number (10 digits) and 1 + a file number (10
# digits), no component with a leading zero: 26 + 10 + 1 + 11 = 48 characters,
# even, so no padding byte follows and every clone has the same length.
UID_ROOT = "1.2.826.0.1.3680043.8.498."
UID_LENGTH = 48
INSTANCE_WIDTH = 8  # Instance Number zero-padded (IS is digits; pydicom strips padding spaces)
ENCODERS = {
    "explicit": None,
    "jpeg-lossless": ["dcmcjpeg", "+e1", "+un"],
    "jpeg-ls": ["dcmcjpls", "+el", "+un"],
    "j2k": ["gdcmconv", "--j2k"],
}
TRANSFER_SYNTAX = {
    "explicit": "1.2.840.10008.1.2.1",
    "jpeg-lossless": "1.2.840.10008.1.2.4.70",
    "jpeg-ls": "1.2.840.10008.1.2.4.80",
    "j2k": "1.2.840.10008.1.2.4.90",
}


def make_uid(run, index):
    uid = "%s%010d.1%010d" % (UID_ROOT, run, index)
    assert len(uid) == UID_LENGTH
    return uid


def instance_number(index):
    return "%0*d" % (INSTANCE_WIDTH, index)


def find_all(data, needle):
    found, at = [], data.find(needle)
    while at >= 0:
        found.append(at)
        at = data.find(needle, at + 1)
    return found


def write_templates(source, syntaxes, out_dir):
    import pydicom  # only this step needs it

    os.makedirs(out_dir, exist_ok=True)
    ds = pydicom.dcmread(source)
    if ds.file_meta.TransferSyntaxUID != TRANSFER_SYNTAX["explicit"]:
        sys.exit("%s: the source must be Explicit VR Little Endian" % source)
    placeholder = make_uid(10**9, 0)
    ds.SOPInstanceUID = placeholder
    ds.file_meta.MediaStorageSOPInstanceUID = placeholder
    ds.InstanceNumber = instance_number(1)  # pydicom keeps a zero-padded string as given
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, "explicit.dcm")
        ds.save_as(plain, write_like_original=False)
        for syntax in syntaxes:
            target = os.path.join(out_dir, syntax + ".dcm")
            encoder = ENCODERS[syntax]
            if encoder is None:
                shutil.copyfile(plain, target)
            else:
                if shutil.which(encoder[0]) is None:
                    sys.exit("%s needs %s, which is not installed" % (syntax, encoder[0]))
                subprocess.run(encoder + [plain, target], check=True)
            data = open(target, "rb").read()
            written = pydicom.dcmread(target)
            if written.file_meta.TransferSyntaxUID != TRANSFER_SYNTAX[syntax]:
                sys.exit("%s: %s wrote transfer syntax %s" % (target, syntax, written.file_meta.TransferSyntaxUID))
            uid_at = find_all(data, placeholder.encode())
            # Explicit VR little endian element header of Instance Number (0020,0013) IS, then its value.
            instance_header = b"\x20\x00\x13\x00IS" + INSTANCE_WIDTH.to_bytes(2, "little")
            instance_at = find_all(data, instance_header + instance_number(1).encode())
            if len(uid_at) != 2 or len(instance_at) != 1:
                sys.exit("%s: found the SOP Instance UID %d times (want 2: meta and dataset) and the "
                         "Instance Number %d times (want 1)" % (target, len(uid_at), len(instance_at)))
            with open(os.path.join(out_dir, syntax + ".json"), "w") as f:
                json.dump({"source": os.path.basename(source), "transfer_syntax": TRANSFER_SYNTAX[syntax],
                           "uid_offsets": uid_at, "uid_length": UID_LENGTH,
                           "instance_offset": instance_at[0] + len(instance_header),
                           "instance_width": INSTANCE_WIDTH}, f, indent=1)
            print("template %s: %d bytes, %s" % (target, len(data), TRANSFER_SYNTAX[syntax]))


def clone(template_dir, syntax, out_dir, count, run):
    data = bytearray(open(os.path.join(template_dir, syntax + ".dcm"), "rb").read())
    where = json.load(open(os.path.join(template_dir, syntax + ".json")))
    if where["uid_length"] != UID_LENGTH or where["instance_width"] != INSTANCE_WIDTH:
        sys.exit("%s/%s.json: made by another version of this script" % (template_dir, syntax))
    os.makedirs(out_dir, exist_ok=True)
    at = where["instance_offset"]
    for i in range(count):
        uid = make_uid(run, i).encode()
        for offset in where["uid_offsets"]:
            data[offset:offset + UID_LENGTH] = uid
        data[at:at + INSTANCE_WIDTH] = instance_number(i + 1).encode()
        with open(os.path.join(out_dir, "ct_%06d.dcm" % i), "wb") as f:
            f.write(data)
    print("%s: %d files of %d bytes (%s)" % (out_dir, count, len(data), where["transfer_syntax"]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="folder that receives one subfolder per syntax")
    p.add_argument("--count", type=int, default=500, help="files per syntax")
    p.add_argument("--syntax", default="explicit,jpeg-lossless",
                   help="comma-separated: " + ", ".join(ENCODERS))
    p.add_argument("--source", default=DEFAULT_SOURCE, help="an Explicit VR Little Endian slice")
    p.add_argument("--templates", help="use the templates in this folder (no pydicom, no encoders needed)")
    p.add_argument("--write-templates", help="only write templates into this folder")
    p.add_argument("--run", type=int, help="run number in the UIDs (default: random)")
    a = p.parse_args()
    syntaxes = [s for s in a.syntax.split(",") if s]
    for s in syntaxes:
        if s not in ENCODERS:
            p.error("unknown syntax %s (%s)" % (s, ", ".join(ENCODERS)))
    if a.write_templates:
        write_templates(a.source, syntaxes, a.write_templates)
        return
    if not a.out:
        p.error("give --out (or --write-templates)")
    run = a.run if a.run is not None else random.randrange(10**9, 10**10)
    with tempfile.TemporaryDirectory() as tmp:
        templates = a.templates
        if templates is None:
            templates = tmp
            write_templates(a.source, syntaxes, templates)
        for s in syntaxes:
            clone(templates, s, os.path.join(a.out, s), a.count, run)


if __name__ == "__main__":
    main()
