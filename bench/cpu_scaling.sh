#!/usr/bin/env bash
# CPU thread scaling of MedMamba inference (issue 15): images/s at 224 px, batch 16, for 1, 2,
# 4, 8 and 16 threads, with mm-bench's own random model and images (nothing read from disk,
# nothing built; only the mm-bench binary is needed).
#
#   bench/cpu_scaling.sh PATH/TO/mm-bench [THREADS...]     e.g. bench/cpu_scaling.sh build/mm-bench
#
# Then mm-bench --cpu-ceilings for the same thread counts: each thread's fma rate with all of
# them running, and the memory bandwidth (what the hardware lets more threads gain).
# Rows: float32, bf16 and int8, each with the batch split into one sub-batch per thread
# (MM_CPU_BATCH_SPLIT=images, lib/model/cpu_batch_split.h) and with every op parallel over the
# whole batch (MM_CPU_BATCH_SPLIT=ops). A cell
# that mm-bench reports as run in the other mode (1 thread: always per op; an mm-bench from
# before the switch: never split) is marked "(ran per op)".
# Models: MedMamba-T, and the dims 48,96,192,384 / depths 2,2,4,2 model of issue 15's
# mm-predict run; ARCHS="tiny" (or ARCHS="48,96,192,384:2,2,4,2") runs one of them.
#
# Each configuration runs twice (3 timed iterations after 1 warm-up each), the rows
# alternating, and the better run counts: other work on the machine only ever slows a
# run down. The 2 -> 16 thread ratio is printed per row (issue 15 asks >= 6x). OpenMP threads
# are bound one per core (OMP_PROC_BIND=close, OMP_PLACES=cores) unless the environment sets
# either already. On a machine with other work running, also try OMP_WAIT_POLICY=passive
# (docs/benchmarks.md says why: spinning threads there can make 2 threads slower than 1).
# bf16 / int8 need a build with oneDNN and a CPU with AVX512_BF16 / AVX512_VNNI (or AMX); where
# they are missing mm-bench says why and that row reads "n/a".
set -u -o pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 PATH/TO/mm-bench [THREADS...]" >&2
  exit 2
fi
bench=$1
shift
if [ ! -x "$bench" ]; then
  echo "$0: $bench is not an executable (pass the path of a built mm-bench)" >&2
  exit 2
fi
threads=("$@")
[ ${#threads[@]} -eq 0 ] && threads=(1 2 4 8 16)
read -r -a archs <<< "${ARCHS:-tiny 48,96,192,384:2,2,4,2}"
# row name -> "precision split" (split: the MM_CPU_BATCH_SPLIT value asked for)
rows=("fp32, sub-batch per thread|fp32 images" "fp32, per op|fp32 ops" "bf16, sub-batch per thread|bf16 images"
      "bf16, per op|bf16 ops" "int8, sub-batch per thread|int8 images" "int8, per op|int8 ops")
batch=16
size=224
cores=$(nproc)
err=$(mktemp)
trap 'rm -f "$err"' EXIT

export OMP_PROC_BIND=${OMP_PROC_BIND:-close}
export OMP_PLACES=${OMP_PLACES:-cores}

echo "# CPU scaling: ${size} px, batch ${batch}, mm-bench forward (best of 2 runs)"
echo "# $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), ${cores} CPUs online; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# OMP_PROC_BIND=${OMP_PROC_BIND} OMP_PLACES=${OMP_PLACES} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset} OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# "img/s split" of one run (batch_split as mm-bench reports it: ops, images/N, or "?" from an
# mm-bench without the field), or nothing when mm-bench failed (its message goes to stderr).
run_once() {
  local arch=$1 precision=$2 split=$3 t=$4 line model
  if [ "$arch" = tiny ]; then model=(--variant tiny)
  else model=(--dims "${arch%%:*}" --depths "${arch##*:}"); fi
  line=$(MM_CPU_BATCH_SPLIT=$split "$bench" "${model[@]}" --size "$size" --batch "$batch" \
           --precision "$precision" --threads "$t" --iters 3 --warmup 1 2>"$err") ||
    { sed 's/^/#   /' "$err" >&2; return 0; }
  local ips ran
  ips=$(echo "$line" | tr ' ' '\n' | sed -n 's/^img\/s=//p')
  ran=$(echo "$line" | tr ' ' '\n' | sed -n 's/^batch_split=//p')
  echo "$ips ${ran:-?}"
}

declare -A best=() ran_as=()
# Best of two runs of every (row, threads), the runs of one thread count alternating over rows.
measure() {
  local arch=$1 t r p s out ips ran
  for t in "${threads[@]}"; do
    for _ in 1 2; do
      for r in "${!rows[@]}"; do
        read -r p s <<< "${rows[$r]#*|}"
        out=$(run_once "$arch" "$p" "$s" "$t")
        [ -z "$out" ] && continue
        read -r ips ran <<< "$out"
        if [ -z "${best[$r,$t]:-}" ] || awk -v a="$ips" -v b="${best[$r,$t]}" 'BEGIN { exit !(a > b) }'; then
          best[$r,$t]=$ips
        fi
        ran_as[$r,$t]=$ran
      done
    done
  done
}

for arch in "${archs[@]}"; do
  best=() ran_as=()
  measure "$arch"
  name=$arch
  [ "$arch" = tiny ] && name="MedMamba-T"
  [ "$arch" != tiny ] && name="dims ${arch%%:*}, depths ${arch##*:}"
  echo ""
  echo "## ${name}"
  echo ""
  header="mode"
  for t in "${threads[@]}"; do header="$header | ${t} thr"; done
  echo "| $header | 16/2 |"
  sep="---"
  for _ in "${threads[@]}"; do sep="$sep|---"; done
  echo "|$sep|---|"
  for r in "${!rows[@]}"; do
    read -r _ s <<< "${rows[$r]#*|}"
    row="${rows[$r]%%|*}"
    for t in "${threads[@]}"; do
      v=${best[$r,$t]:-}
      cell=$( [ -n "$v" ] && awk -v v="$v" 'BEGIN { printf "%.1f", v }' || echo "n/a")
      ran=${ran_as[$r,$t]:-}
      [ "$s" = images ] && [ -n "$v" ] && [ "${ran%%/*}" != images ] && cell="$cell (ran per op)"
      [ "$t" -gt "$cores" ] && cell="$cell (>${cores} CPUs)"
      row="$row | $cell"
    done
    ratio="n/a"
    if [ -n "${best[$r,2]:-}" ] && [ -n "${best[$r,16]:-}" ]; then
      ratio=$(awk -v a="${best[$r,2]}" -v b="${best[$r,16]}" 'BEGIN { printf "%.2fx", b / a }')
    fi
    echo "| $row | $ratio |"
  done
done
# What the hardware allows for the same thread counts (an mm-bench from before the option
# prints its refusal there instead).
echo ""
echo "## CPU ceilings (mm-bench --cpu-ceilings)"
echo ""
echo '```'
"$bench" --cpu-ceilings "$(IFS=,; echo "${threads[*]}")" 2>&1 | sed 's/^/  /'
echo '```'
echo ""
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
