#!/usr/bin/env bash
# End-to-end speed of mm-predict on folders of files: images/s, the model's
# share of the wall time, and the CPU time per image of each input stage
# (parse, pixel data, convert, voi, window, resize, normalise; mm-predict
# --timing). One line per folder in a Markdown table on stdout; each run's
# full --timing output goes to stderr.
#
#   bench/pipeline.sh [--bin DIR] [--model FILE] [--device cpu|cuda] [--precision P]
#                     [--batch N] [--threads N] [--runs N] FOLDER...
#
# --bin: where mm-predict is (default: build). --runs: runs per folder, the
# fastest kept (default 1); the first run also fills the page cache. Any other
# mm-predict option can go in MM_PREDICT_ARGS.
set -euo pipefail

bin=build model="" device=cpu precision=fp32 batch=16 threads="" runs=1
folders=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "pipeline.sh: unknown option $1" >&2; exit 2 ;;
    *) folders+=("$1"); shift ;;
  esac
done
[ ${#folders[@]} -gt 0 ] || { echo "pipeline.sh: give one or more folders" >&2; exit 2; }

args=(--device "$device" --precision "$precision" --batch-size "$batch" --timing -o /dev/null)
[ -n "$model" ] && args+=(--model "$model")
[ -n "$threads" ] && args+=(--threads "$threads")
# shellcheck disable=SC2206
extra=(${MM_PREDICT_ARGS:-})

echo "| input | files | images/s | model % of wall | waiting % | decode + preprocess CPU ms/image | by stage (CPU ms/image) |"
echo "|---|---|---|---|---|---|---|"
for folder in "${folders[@]}"; do
  best="" best_rate=0
  for ((r = 1; r <= runs; ++r)); do
    log=$("$bin/mm-predict" "${args[@]}" "${extra[@]}" "$folder" 2>&1) || {
      code=$?
      # 3: some files failed, the rest were classified: still a measurement.
      [ $code -eq 3 ] || { echo "$log" >&2; echo "pipeline.sh: mm-predict failed ($code) on $folder" >&2; exit 1; }
    }
    echo "$log" >&2
    rate=$(sed -n 's/.* s: \([0-9.]*\) images\/s on .*/\1/p' <<<"$log")
    if [ -z "$best" ] || awk -v a="$rate" -v b="$best_rate" 'BEGIN { exit !(a > b) }'; then
      best=$log best_rate=$rate
    fi
  done
  files=$(sed -n 's/.* classified from \([0-9]*\) files.*/\1/p' <<<"$best")
  model_share=$(sed -n 's/.*; model [0-9.]* s (\([0-9]*%\) of wall).*/\1/p' <<<"$best")
  waiting=$(sed -n 's/.*waiting for decoded images [0-9.]* s (\([0-9]*%\)).*/\1/p' <<<"$best")
  cpu=$(sed -n 's/.*CPU ms per image: decoding \([0-9.]*\) + preprocessing \([0-9.]*\);.*/\1 + \2/p' <<<"$best")
  stages=$(sed -n 's/.*; by stage: \(.*\)$/\1/p' <<<"$best")
  echo "| $(basename "$folder") | $files | $best_rate | $model_share | $waiting | $cpu | $stages |"
done
