#!/usr/bin/env bash
# Renders mm-eval's HTML report in headless Chromium and checks that it loads
# nothing from the network, logs nothing on the console (errors, failed
# thumbnails: the report's own check script logs those), and saves a screenshot.
#
# Usage: report_browser_test.sh MM_EVAL SHARED_DATA_DIR OUT_DIR EXPECT_THUMBNAILS
#   EXPECT_THUMBNAILS: 1 when mm-eval was built with the image readers, so the
#   mistakes table must hold decoded thumbnails of the DICOM files used here.
set -euo pipefail
mm_eval=$1 data=$2 out=$3 expect_thumbnails=$4
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "FAIL: chromium is not installed (setup.sh installs it)"; exit 1; }
rm -rf "$out" && mkdir -p "$out"

# Three classes of DICOM image; the made-up probabilities include confident mistakes.
dicom=$data/dicom/pydicom/test_files
{
  echo "path,label"
  for f in CT_small.dcm liver_1frame.dcm rtdose_1frame.dcm; do echo "$dicom/$f,ct"; done
  for f in MR_small.dcm MR_small_RLE.dcm MR_small_implicit.dcm MR_small_bigendian.dcm; do echo "$dicom/$f,mr"; done
  for f in SC_rgb_rle.dcm SC_rgb_jpeg_dcmtk.dcm SC_rgb_small_odd.dcm; do echo "$dicom/$f,colour"; done
} > "$out/labels.csv"
probabilities=(
  "0.80,0.15,0.05" "0.20,0.70,0.10" "0.40,0.35,0.25"
  "0.10,0.85,0.05" "0.05,0.90,0.05" "0.92,0.05,0.03" "0.30,0.60,0.10"
  "0.10,0.10,0.80" "0.15,0.80,0.05" "0.05,0.05,0.90")
{
  echo "path,prob_ct,prob_mr,prob_colour"
  i=0
  tail -n +2 "$out/labels.csv" | while IFS=, read -r path label; do
    echo "$path,${probabilities[$i]}"
    i=$((i + 1))
  done
} > "$out/predictions.csv"

"$mm_eval" --predictions "$out/predictions.csv" --labels "$out/labels.csv" --bootstrap 200 --seed 1 \
  --json "$out/metrics.json" --report "$out/report" -q > "$out/console.txt"
html=$out/report/index.html

if grep -Eq "https?://" "$html"; then echo "FAIL: the report names a network address"; exit 1; fi
if grep -Eo "src=['\"][^'\"]{0,5}" "$html" | grep -v "data:" ; then echo "FAIL: a non-data: source"; exit 1; fi
thumbnails=$(grep -o "data:image/png;base64," "$html" | wc -l)
if [ "$expect_thumbnails" = 1 ] && [ "$thumbnails" -lt 3 ]; then
  echo "FAIL: $thumbnails thumbnails in the report"; grep -o "no thumbnail: [^<]*" "$html" || true; exit 1
fi

# --user-data-dir keeps concurrent runs apart; Chromium logs console messages as "INFO:CONSOLE".
timeout 120 "$browser" --headless --disable-gpu --no-sandbox --user-data-dir="$out/profile" \
  --window-size=1280,3200 --screenshot="$out/screenshot.png" --enable-logging=stderr --v=0 \
  "file://$html" 2> "$out/browser.log" || { echo "FAIL: chromium exited with $?"; tail "$out/browser.log"; exit 1; }
if grep -E "CONSOLE|Uncaught" "$out/browser.log"; then echo "FAIL: console messages above"; exit 1; fi
[ -s "$out/screenshot.png" ] || { echo "FAIL: no screenshot"; exit 1; }
echo "OK: report rendered with $thumbnails thumbnails and no console messages; screenshot $out/screenshot.png"
