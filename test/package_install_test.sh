#!/usr/bin/env bash
# The .deb (issue 13): cpack builds it from the build folder, dpkg-deb extracts it into a
# scratch root (no root needed, no /usr involved), and the extracted tools run from there as
# on a machine they were copied to: --help, a man page per tool, a brain MRI JPEG classified
# without --model (the default model found relative to the executable), and an implicit-VR
# DICOM file read with the system's DCMTK dictionary hidden (the shipped copy is used).
# Exit 77 (CTest: skipped) without cpack or dpkg-deb.
# Usage: package_install_test.sh BUILD_DIR SOURCE_DIR SHARED_DATA_DIR
set -euo pipefail
build=$(realpath "$1") source=$(realpath "$2") data=$3
for tool in cpack dpkg-deb; do
  command -v $tool >/dev/null || { echo "SKIP: $tool not found"; exit 77; }
done
fail() { echo "FAIL: $*"; exit 1; }
# cpack installs every tool: a build of some targets only (--target mm-tests) cannot be packaged.
for tool in mm-predict mm-eval mm-train mm-convert mm-bench mm-serve man/mm-predict.1; do
  [ -e "$build/$tool" ] || { echo "SKIP: $build/$tool not built (build every target first)"; exit 77; }
done
scratch=$build/package-test
rm -rf "$scratch" && mkdir -p "$scratch"

start=$(date +%s)
(cd "$scratch" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$scratch/out" >cpack.log 2>&1) ||
  { cat "$scratch/cpack.log"; fail "cpack"; }
deb=$(ls "$scratch"/out/*.deb)
echo "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB) in $(($(date +%s) - start)) s"
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
for lib in libdcmtk libopenblas libgomp; do
  echo "$depends" | grep -q "$lib" || fail "Depends lacks $lib"
done

root=$scratch/root
dpkg-deb -x "$deb" "$root"
bin=$root/usr/bin
for tool in mm-predict mm-eval mm-train mm-convert mm-bench mm-serve; do
  [ -x "$bin/$tool" ] || fail "$tool not installed"
  "$bin/$tool" --help | grep -q "^Usage: " || fail "$tool --help"
  page=$root/usr/share/man/man1/$tool.1
  grep -q '^\.SH OPTIONS' "$page" || fail "no man page $page"
done
[ -f "$root/usr/share/medmamba/models/brain-mri-224.safetensors" ] || fail "default model not installed"
[ -f "$root/usr/share/medmamba/docs/mm-predict.md" ] || fail "docs not installed"
echo "bin/: $(ls "$bin" | tr '\n' ' '); --help and man pages ok"
if command -v ldd >/dev/null && ldd "$bin/mm-predict" | grep "not found"; then fail "the installed mm-predict misses libraries"; fi

# The true class is in the folder name; the build tree's run with --model is the reference.
jpeg=$data/brain-tumor-mri/Testing/pituitary/Te-piTr_0000.jpg
[ -f "$jpeg" ] || { echo "SKIP: $jpeg not found"; exit 77; }
"$bin/mm-predict" "$jpeg" >"$scratch/default.csv" 2>"$scratch/default.err" || { cat "$scratch/default.err"; fail "mm-predict"; }
grep -q "model $root/usr/share/medmamba/models/brain-mri-224.safetensors (the default)" "$scratch/default.err" ||
  fail "mm-predict did not say it used the installed default model: $(cat "$scratch/default.err")"
"$build/mm-predict" -q --model "$source/share/models/brain-mri-224.safetensors" "$jpeg" >"$scratch/reference.csv"
cmp -s "$scratch/default.csv" "$scratch/reference.csv" || fail "$(cat "$scratch/default.csv") differs from $(cat "$scratch/reference.csv")"
echo "installed mm-predict, no --model: $(sed -n 2p "$scratch/default.csv" | cut -d, -f7-10) (true class: pituitary)"

"$source/test/dicom_dictionary_test.sh" "$bin/mm-predict" "$root/usr/share/medmamba/models/brain-mri-96.safetensors" \
  "$data" --installed
