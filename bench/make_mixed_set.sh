#!/usr/bin/env bash
# Input (c) of the end-to-end benchmark (issue 14): the real single-frame DICOM
# files of ../shared/data/dicom, every kind the collection has (CT, MR, US, CR,
# NM, DX, ...; uncompressed, JPEG, JPEG-LS, JPEG 2000, RLE, deflate).
#
# A file is in the set when it is at most 1 MiB, mm-predict reads exactly one
# image from it (status ok), and its Rows and Columns are both at least 128
# (dcmdump). The files are copied under OUT with their path below the shared
# dicom folder, so names stay unique; OUT/list.txt lists them.
#
#   bench/make_mixed_set.sh [--bin BUILD_DIR] [--shared DIR] OUT
#
# --bin: where mm-predict is (default build); --shared: the shared dicom folder
# (default ../shared/data/dicom). Needs DCMTK's dcmdump. The set on
# 2026-12-03: 150 files, 33.7 MB.
#
# bench/device_pipeline.sh takes the folder as MIXED_DIR (repeated REPEAT
# times through links, to give the 16 decode threads enough files).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build shared=../shared/data/dicom out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --shared) shared=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "make_mixed_set.sh: unknown option $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
[ -n "$out" ] || { echo "make_mixed_set.sh: give an output folder" >&2; exit 2; }
command -v dcmdump >/dev/null || { echo "make_mixed_set.sh: needs DCMTK's dcmdump" >&2; exit 1; }
shared=$(cd "$shared" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

find "$shared" -type f -size -1025k | sort >"$tmp/candidates.txt"
# Exit 3 (some files failed) is expected: most of the collection is not one image.
"$bin/mm-predict" --model share/models/brain-mri-96.safetensors --device cpu -q --list "$tmp/candidates.txt" \
  -o "$tmp/records.csv" 2>/dev/null || [ $? -eq 3 ]
python3 - "$tmp/records.csv" >"$tmp/one_image.txt" <<'EOF'
import collections, csv, sys
records = collections.defaultdict(list)
for row in csv.DictReader(open(sys.argv[1], newline="")):
    records[row["path"]].append(row["status"])
for path, statuses in records.items():
    if statuses == ["ok"]:
        print(path)
EOF

rm -rf "$out" && mkdir -p "$out"
n=0
while IFS= read -r f; do
  # Top-level Rows and Columns only: dcmdump indents the elements of sequences (icons).
  read -r rows cols < <(dcmdump -q "$f" 2>/dev/null | sed -n 's/^(0028,001[01]) US \([0-9]*\).*/\1/p' | tr '\n' ' ') ||
    true
  [ -n "${rows:-}" ] && [ -n "${cols:-}" ] && [ "$rows" -ge 128 ] && [ "$cols" -ge 128 ] || continue
  rel=${f#"$shared"/}
  mkdir -p "$out/$(dirname "$rel")" && cp "$f" "$out/$rel"
  echo "$rel" >>"$out/list.txt"
  n=$((n + 1))
done <"$tmp/one_image.txt"
echo "make_mixed_set.sh: $n files, $(du -sh --exclude=list.txt "$out" | cut -f1) in $out" >&2
