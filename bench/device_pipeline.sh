#!/usr/bin/env bash
# The end-to-end pipeline benchmark (issue 14) on the GPU machine, from a
# bundle built here: no DCMTK, ITK, pydicom or encoders needed there.
#
# Here, first (a few minutes when the CUDA build is current; the first CUDA
# build takes about 20 minutes on 2 cores):
#
#   bench/make_device_bundle.sh            # -> .device-data/bundle (see its top)
#
# Then on the device, from the repository root, carrying the bundle:
#
#   run(command="bench/device_pipeline.sh", carry=[".device-data/bundle"], timeout_s=600)
#
# What it does: unpacks the libraries into /tmp, sets LD_LIBRARY_PATH and
# DCMDICTPATH, checks that ldd resolves everything, clones the CT templates
# into folders (bench/make_ct_folder.py --templates: plain python3), makes the
# models with one mm-train epoch each on the GPU, and runs
# bench/pipeline.sh on each folder. Results: $OUT/pipeline.md (tables),
# $OUT/pipeline.log (every run's --timing output).
#
# Environment (defaults in brackets):
#   DEVICE [cuda]  PRECISION [bf16]  BATCH [128]  THREADS [all CPUs]  RUNS [2]
#   N_EXPLICIT [10000]  N_JPEG [4000]  N_JPEGLS [2000]  N_J2K [1000]   files per syntax
#   MODELS ["dims48 tiny"]  dims48: dims 48..384, depths 2,2,4,2; tiny: MedMamba-T
#                           (both 224 px, made by one mm-train epoch there);
#                           default: share/models/brain-mri-96 (96 px); or a model file
#   MIXED_DIR [unset]  input (c): the real single-frame DICOM files made by
#                      bench/make_mixed_set.sh (carried), REPEAT [8] times through links
#   BRAIN_DIR [unset]  a folder of class folders of brain-MRI JPEGs (the shared
#                      data's Testing/, carried): also mm-eval on it, default model
#   MM_PREDICT_ARGS [unset]  more mm-predict options for every run (e.g. --draft)
#   WORK [/tmp/mm-device-pipeline]  where the folders go (10,000 files: 5.3 GB)
#   OUT [./device-pipeline-out]
# Expected time on the H200 machine (16 cores): about 3 minutes (cloning the
# files ~1 min, the runs 1-2 min).
#
# Tested here end to end with the same bundle and LD_LIBRARY_PATH:
#   DEVICE=cpu PRECISION=fp32 BATCH=16 N_EXPLICIT=60 N_JPEG=40 N_JPEGLS=20 N_J2K=20 \
#     MODELS=dims48 bench/device_pipeline.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=$PWD/.device-data/bundle
DEVICE=${DEVICE:-cuda} PRECISION=${PRECISION:-bf16} BATCH=${BATCH:-128} RUNS=${RUNS:-2}
THREADS=${THREADS:-$(nproc)}
N_EXPLICIT=${N_EXPLICIT:-10000} N_JPEG=${N_JPEG:-4000} N_JPEGLS=${N_JPEGLS:-2000} N_J2K=${N_J2K:-1000}
MODELS=${MODELS:-dims48 tiny}
WORK=${WORK:-/tmp/mm-device-pipeline}
OUT=${OUT:-$PWD/device-pipeline-out}
mkdir -p "$OUT" "$WORK"
log=$OUT/pipeline.log report=$OUT/pipeline.md
start=$(date +%s)
gpu_name() { nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sed -n 1p || echo 'no GPU'; }
say() { echo "[$(($(date +%s) - start)) s] $*" | tee -a "$log"; }

[ -f "$bundle/payload.tar.xz" ] || { echo "no bundle at $bundle: run bench/make_device_bundle.sh here first" >&2; exit 1; }
unxz_to_stdout() {  # python's lzma where xz is not installed
  if command -v xz >/dev/null; then xz -dc "$1"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; fi
}
rm -rf "$WORK/bin" "$WORK/lib" && unxz_to_stdout "$bundle/payload.tar.xz" | tar -x -C "$WORK"
export LD_LIBRARY_PATH=$WORK/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export DCMDICTPATH=$bundle/share/dicom.dic
bin=$WORK/bin
missing=$(ldd "$bin/mm-predict" "$bin/mm-eval" "$bin/mm-train" | grep "not found" | sort -u || true)
if [ -n "$missing" ]; then printf 'unresolved libraries:\n%s\n' "$missing" | tee -a "$log"; exit 1; fi
{ echo "libraries from the system, not the bundle:"; ldd "$bin/mm-predict" | grep -v "$WORK/lib" || true; } >>"$log"
cpu_name() {
  local avx512=no
  grep -qw avx512f /proc/cpuinfo && avx512=with
  echo "$(nproc) CPUs ($(sed -n 's/^model name[^:]*: *//p' /proc/cpuinfo | sed -n 1p), $avx512 AVX-512)"
}
say "$(cpu_name); $(gpu_name)"

rm -rf "$WORK/ct"
for spec in explicit:$N_EXPLICIT jpeg-lossless:$N_JPEG jpeg-ls:$N_JPEGLS j2k:$N_J2K; do
  syntax=${spec%%:*} count=${spec##*:}
  [ "$count" -gt 0 ] || continue
  env -u LD_LIBRARY_PATH python3 bench/make_ct_folder.py --templates "$bundle/templates" --syntax "$syntax" --count "$count" \
    --out "$WORK/ct" | tee -a "$log"
done
say "folders made: $(du -sh "$WORK/ct" | cut -f1)"

# A model for speed measurements: one mm-train epoch on 32 of the CT files
# (two made-up classes); its weights do not matter.
train_model() {  # NAME, then mm-train's architecture options
  local name=$1 csv=$WORK/train.csv files=("$WORK/ct/explicit"/*.dcm)
  shift
  { echo path,label; printf '%s\n' "${files[@]:0:32}" | awk '{ print $0 "," (NR % 2 ? "a" : "b") }'; } >"$csv"
  rm -rf "$WORK/$name"
  "$bin/mm-train" --data "$csv" --out "$WORK/$name" "$@" --image-size 224 --epochs 1 --batch-size 8 \
    --val-fraction 0.25 --device "$DEVICE" -q >>"$log" 2>&1
  echo "$WORK/$name/best.safetensors"
}
model_file() {
  case $1 in
    dims48) train_model dims48 --dims 48,96,192,384 --depths 2,2,4,2 ;;
    tiny) train_model tiny --variant tiny ;;
    default) echo "$PWD/share/models/brain-mri-96.safetensors" ;;
    *) echo "$1" ;;
  esac
}

{
  echo "# Pipeline benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "$(cpu_name), $(gpu_name);" \
    "device $DEVICE, precision $PRECISION, batch $BATCH, $THREADS threads, best of $RUNS runs; files in the page cache."
} >"$report"
folders=()
for s in explicit jpeg-lossless jpeg-ls j2k; do [ -d "$WORK/ct/$s" ] && folders+=("$WORK/ct/$s"); done
if [ -n "${MIXED_DIR:-}" ] && [ -f "$MIXED_DIR/list.txt" ]; then  # input (c), repeated through links
  rm -rf "$WORK/mixed"
  for ((r = 1; r <= ${REPEAT:-8}; ++r)); do
    while IFS= read -r rel; do
      mkdir -p "$WORK/mixed/r$r/$(dirname "$rel")" && ln -s "$(cd "$MIXED_DIR" && pwd)/$rel" "$WORK/mixed/r$r/$rel"
    done <"$MIXED_DIR/list.txt"
  done
  say "mixed set: $(wc -l <"$MIXED_DIR/list.txt") files x ${REPEAT:-8}"
  folders+=("$WORK/mixed")
fi
for m in $MODELS; do
  file=$(model_file "$m") || { say "model $m: mm-train failed (see pipeline.log)"; continue; }
  say "model $m: $file"
  { echo; echo "## model $m ($(basename "$file"))"; echo; } >>"$report"
  bench/pipeline.sh --bin "$bin" --model "$file" --device "$DEVICE" --precision "$PRECISION" --batch "$BATCH" \
    --threads "$THREADS" --runs "$RUNS" "${folders[@]}" >>"$report" 2>>"$log" ||
    say "model $m: bench/pipeline.sh failed (see pipeline.log)"
  say "model $m done"
done
if [ -n "${BRAIN_DIR:-}" ] && [ -d "$BRAIN_DIR" ]; then
  say "mm-eval on $BRAIN_DIR"
  { echo; echo "## mm-eval, brain-MRI JPEGs ($BRAIN_DIR)"; echo; echo '```'; } >>"$report"
  t0=$(date +%s.%N)
  "$bin/mm-eval" --model share/models/brain-mri-224.safetensors --data "$BRAIN_DIR" --device "$DEVICE" \
    --precision "$PRECISION" --batch-size "$BATCH" --threads "$THREADS" >>"$report" 2>&1 || true
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "mm-eval wall time: %.2f s\n", b - a }' >>"$report"
  echo '```' >>"$report"
fi
cat "$report"
say "done"
