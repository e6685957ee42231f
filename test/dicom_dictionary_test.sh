#!/usr/bin/env bash
# mm-predict on an implicit-VR DICOM file without DCMTK's data dictionary (issue 13).
# Implicit VR files need the dictionary for Rows, Columns and the rest; without it every
# uncompressed image used to fail as "corrupt: pixel data without Rows or Columns".
# Checks: a DCMDICTPATH naming no dictionary fails with a message naming DCMDICTPATH; a
# machine without /usr/share/libdcmtk* (hidden by a tmpfs in a user+mount namespace, where
# unshare is allowed) fails naming the missing dictionary, or, for an installed mm-predict
# (<prefix>/share/medmamba/dicom.dic beside it), classifies the file as with the dictionary.
# Usage: dicom_dictionary_test.sh MM_PREDICT MODEL SHARED_DATA_DIR [--installed]
set -euo pipefail
predict=$1 model=$2 data=$3 installed=${4:-}
file=$data/dicom/pydicom/test_files/MR_small_implicit.dcm
[ -f "$file" ] || { echo "SKIP: $file not found"; exit 0; }
fail() { echo "FAIL: $*"; exit 1; }

# column 7 is status, 10 probability, 15 error (CSV; the error is quoted and holds commas)
reference=$(env -u DCMDICTPATH "$predict" -q --model "$model" "$file" | sed -n 2p)
[ "$(echo "$reference" | cut -d, -f7)" = ok ] || fail "with the dictionary: $reference"
echo "with the dictionary: $(echo "$reference" | cut -d, -f7-10)"

set +e
out=$(DCMDICTPATH=/nonexistent/dicom.dic "$predict" -q --model "$model" "$file" 2>&1); rc=$?
set -e
[ "$rc" = 4 ] || fail "DCMDICTPATH=/nonexistent: exit code $rc, expected 4 (nothing classified)"
echo "$out" | grep -q "Rows or Columns" && fail "still the misleading message: $out"
echo "$out" | grep -q "data dictionary is not loaded: DCMDICTPATH=/nonexistent/dicom.dic" ||
  fail "no message naming DCMDICTPATH: $out"
echo "DCMDICTPATH=/nonexistent: exit 4, $(echo "$out" | tail -1)"

dirs=(/usr/share/libdcmtk*)
if ! unshare -rm true 2>/dev/null || [ ! -d "${dirs[0]}" ]; then
  echo "SKIP (no user namespaces, or no /usr/share/libdcmtk*): the machine without DCMTK's dictionary"
  exit 0
fi
hide="for d in ${dirs[*]}; do mount -t tmpfs none \$d; done"
set +e
out=$(env -u DCMDICTPATH unshare -rm sh -c "$hide; exec \"\$0\" -q --model \"\$1\" \"\$2\"" "$predict" "$model" "$file" 2>&1)
rc=$?
set -e
if [ "$installed" = --installed ]; then
  [ "$rc" = 0 ] || fail "installed, no system dictionary: exit code $rc: $out"
  [ "$(echo "$out" | sed -n 2p)" = "$reference" ] || fail "installed, no system dictionary: $out differs from $reference"
  echo "installed, no system dictionary: the shipped share/medmamba/dicom.dic gives the same record"
else
  [ "$rc" = 4 ] || fail "no system dictionary: exit code $rc, expected 4: $out"
  echo "$out" | grep -q "data dictionary is not loaded, so no DICOM file can be read correctly (looked for dicom.dic in" ||
    fail "no system dictionary: no message naming it: $out"
  echo "no system dictionary: exit 4, $(echo "$out" | tail -1)"
fi
echo PASS
