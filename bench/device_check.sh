#!/usr/bin/env bash
# One call on the GPU machine that checks a commit and measures what the issues ask of it,
# from the binaries bench/make_device_tests.sh packed here (no build there):
#   1. every CUDA test (mm-tests -tc='cuda*');
#   2. MedMamba-T alone on the GPU: bf16 and fp32 (TF32) at batch 128, bf16 at batch 1;
#   3. CPU thread scaling, 2 and 16 threads, with the CPU ceilings (bench/cpu_scaling.sh):
#      float32 rows only, since those binaries are built without oneDNN (bf16/int8 read n/a);
#   4. ("train", not in the default steps) MedMamba-T training steps, batch 64, bf16, eager
#      (MM_TRAIN_GRAPHS=0) and replayed as CUDA graphs (=1), alternating, twice;
#   5. ("ab") the same training step of a base build against this one, ROUNDS (default 3)
#      rounds alternating in one call, the only comparison this machine's run-to-run noise
#      (2-4% between calls on one kind of card) leaves readable; the base is
#      .device-data/base.tar.xz, a pack of an earlier make_device_tests.sh (mm-bench alone
#      is enough: tar xJf bin.tar.xz mm-bench, then repack, about 9 MB);
#   5b. ("abinfer") the same for inference: MedMamba-T bf16 at batch 1, 8 and 128;
#   6. ("ncu") one eager training step of this build under Nsight Compute, summed by kernel
#      (bench/ncu_by_kernel.py; about 20 s): where a change moved the time; ("ncuinfer") one
#      inference pass of MedMamba-T, bf16, at each batch of NCU_BATCHES (default 1), with
#      warm caches and unlocked clocks.
# Results go to $OUT (tests.txt, gpu.txt, cpu_scaling.md, train.txt, ab.txt, ncu.csv) and a
# summary to stdout.
#
#   bench/make_device_tests.sh        # here, first
#   run(command="bash bench/device_check.sh", carry=[".device-data/bin.tar.xz"])
#   run(command="STEPS='tests ab ncu' bash bench/device_check.sh",
#       carry=[".device-data/bin.tar.xz", ".device-data/base.tar.xz"])
#
# STEPS="tests gpu" (or any subset of "tests gpu cpu train ab abinfer ncu ncuinfer") skips the
# rest; about 1, 1, 5, 1, 1 and 0.5 minutes on the H200 machine's 16 cores.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/device-check}
mkdir -p "$out" .device-data/bin
tar xJf .device-data/bin.tar.xz -C .device-data/bin || { echo "device_check: no .device-data/bin.tar.xz" >&2; exit 2; }
bin=.device-data/bin
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
steps=" ${STEPS:-tests gpu cpu} "
status=0

if [[ $steps == *" tests "* ]]; then
  "$bin/mm-tests" -tc='cuda*' >"$out/tests.txt" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  echo "cuda tests: rc=$rc; $(grep -E '^\[doctest\] test cases' "$out/tests.txt")"
fi

if [[ $steps == *" gpu "* ]]; then
  : >"$out/gpu.txt"
  b128="--batch 128 --iters 30 --warmup 5"
  for args in "$b128 --precision bf16" "$b128 --precision fp32" "$b128 --precision bf16" "$b128 --precision fp32" \
              "--batch 1 --precision bf16 --iters 300 --warmup 20"; do
    # shellcheck disable=SC2086
    line=$("$bin/mm-bench" --device cuda --variant tiny $args 2>&1 | tail -1)
    echo "$line" >>"$out/gpu.txt"
    summary=$(sed -n 's/.*batch=\([0-9]*\).*precision=\([a-z0-9]*\).*ms\/iter=\([0-9.]*\) img\/s=\([0-9.]*\).*/T batch \1 \2: \3 ms, \4 img\/s/p' <<<"$line")
    [ -n "$summary" ] && echo "$summary" || { echo "mm-bench $args: $line"; status=1; }
  done
fi

if [[ $steps == *" train "* ]]; then
  for graphs in 0 1 0 1; do
    line=$(MM_TRAIN_GRAPHS=$graphs "$bin/mm-bench" --device cuda --variant tiny --mode train --batch 64 \
             --precision bf16 --iters 10 --warmup 3 2>&1 | tail -1)
    echo "MM_TRAIN_GRAPHS=$graphs $line" >>"$out/train.txt"
    echo "train T b64 bf16, MM_TRAIN_GRAPHS=$graphs: $(grep -o 'ms/iter=[0-9.]* img/s=[0-9.]*' <<<"$line" || echo "$line")"
  done
fi

# ab_rounds NAME MM-BENCH-ARGS...: base and new, alternating, ROUNDS times (default 3).
ab_rounds() {
  local name=$1 r who b line summary
  shift
  for ((r = 1; r <= ${ROUNDS:-3}; r++)); do
    for who in base new; do
      b=$bin && [ $who = base ] && b=.device-data/base
      line=$("$b/mm-bench" --device cuda --variant tiny "$@" 2>&1 | tail -1)
      echo "$name $who $line" >>"$out/ab.txt"
      summary=$(grep -o 'ms/iter=[0-9.]* img/s=[0-9.]*\( gpu_mem_MiB=[0-9]*\)\?' <<<"$line")
      [ -n "$summary" ] && echo "$name round $r $who: $summary" || { echo "$name round $r $who: $line"; status=1; }
    done
  done
}
if [[ $steps == *" ab "* || $steps == *" abinfer "* ]]; then
  mkdir -p .device-data/base
  if tar xJf .device-data/base.tar.xz -C .device-data/base mm-bench; then
    [[ $steps == *" ab "* ]] &&
      ab_rounds "train b64 bf16" --mode train --batch 64 --precision bf16 --iters 20 --warmup 3
    if [[ $steps == *" abinfer "* ]]; then
      ab_rounds "infer b1 bf16" --batch 1 --precision bf16 --iters 300 --warmup 20
      ab_rounds "infer b8 bf16" --batch 8 --precision bf16 --iters 100 --warmup 10
      ab_rounds "infer b128 bf16" --batch 128 --precision bf16 --iters 30 --warmup 5
    fi
  else
    echo "ab: no .device-data/base.tar.xz with an mm-bench in it"
    status=1
  fi
fi

if [[ $steps == *" ncu "* ]]; then
  MM_TRAIN_GRAPHS=0 /usr/local/cuda/bin/ncu --metrics gpu__time_duration.sum --csv "$bin/mm-bench" --device cuda \
    --variant tiny --mode train --batch 64 --precision bf16 --iters 1 --warmup 0 >"$out/ncu.csv" 2>"$out/ncu.err" &&
    python3 bench/ncu_by_kernel.py "$out/ncu.csv" --top 20 || { echo "ncu: failed (see ncu.err)"; status=1; }
fi

if [[ $steps == *" ncuinfer "* ]]; then
  # Warm caches and the card's own clocks: a batch-1 pass runs from L2, so ncu's default
  # flush and locked clocks overstate its short kernels (1.08 ms summed against 0.68 ms).
  for bs in ${NCU_BATCHES:-1}; do
    /usr/local/cuda/bin/ncu --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
      "$bin/mm-bench" --device cuda --variant tiny --batch "$bs" --precision bf16 --iters 1 --warmup 0 \
      >"$out/ncu_infer_b$bs.csv" 2>"$out/ncu_infer_b$bs.err" &&
      { echo "ncu, inference batch $bs:"; python3 bench/ncu_by_kernel.py "$out/ncu_infer_b$bs.csv" --top 25; } ||
      { echo "ncuinfer: failed (see ncu_infer_b$bs.err)"; status=1; }
  done
fi

if [[ $steps == *" cpu "* ]]; then
  bench/cpu_scaling.sh "$bin/mm-bench" 2 16 >"$out/cpu_scaling.md" 2>&1
  grep -E '^\| (fp32|bf16|int8)|cpu-ceilings' "$out/cpu_scaling.md"
fi
exit $status
