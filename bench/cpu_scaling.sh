#!/usr/bin/env bash
# CPU thread scaling of MedMamba inference (issue 15): images/s of MedMamba-T at 224 px,
# batch 16, for 1, 2, 4, 8 and 16 threads, in float32, bf16 and int8, with mm-bench's own
# random model and images (nothing read from disk, nothing built).
#
#   bench/cpu_scaling.sh PATH/TO/mm-bench [THREADS...]     e.g. bench/cpu_scaling.sh build/mm-bench
#
# Each configuration runs twice (3 timed iterations after 1 warm-up each) and the better run
# counts: other work on the machine only ever slows a run down. The 2 -> 16 thread ratio is
# printed per precision (issue 15 asks >= 6x). OpenMP threads are bound one per core
# (OMP_PROC_BIND=close, OMP_PLACES=cores) unless the environment sets either already. On a
# machine with other work running, also try OMP_WAIT_POLICY=passive (docs/benchmarks.md says
# why: spinning threads there can make 2 threads slower than 1).
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
precisions=(fp32 bf16 int8)
batch=16
size=224
cores=$(nproc)

export OMP_PROC_BIND=${OMP_PROC_BIND:-close}
export OMP_PLACES=${OMP_PLACES:-cores}

echo "# CPU scaling: MedMamba-T, ${size} px, batch ${batch}, mm-bench forward (best of 2 runs)"
echo "# $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), ${cores} CPUs online; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# OMP_PROC_BIND=${OMP_PROC_BIND} OMP_PLACES=${OMP_PLACES} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset} OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# img/s of one run, or empty when mm-bench failed (its message goes to stderr).
run_once() {
  local precision=$1 t=$2 line
  line=$("$bench" --variant tiny --size "$size" --batch "$batch" --precision "$precision" --threads "$t" \
           --iters 3 --warmup 1 2>/tmp/cpu_scaling.$$.err) || { sed 's/^/#   /' /tmp/cpu_scaling.$$.err >&2; return 0; }
  echo "$line" | tr ' ' '\n' | sed -n 's/^img\/s=//p'
}

best_of_two() {
  local a b
  a=$(run_once "$1" "$2")
  b=$(run_once "$1" "$2")
  if [ -z "$a" ] && [ -z "$b" ]; then echo ""; return; fi
  awk -v a="${a:-0}" -v b="${b:-0}" 'BEGIN { printf "%.1f", (a > b ? a : b) }'
}

header="precision"
for t in "${threads[@]}"; do header="$header | ${t} thr"; done
echo ""
echo "| $header | 16/2 |"
sep="---"
for _ in "${threads[@]}"; do sep="$sep|---"; done
echo "|$sep|---|"

for p in "${precisions[@]}"; do
  row="$p"
  declare -A ips=()
  for t in "${threads[@]}"; do
    v=$(best_of_two "$p" "$t")
    ips[$t]=$v
    cell=${v:-n/a}
    [ "$t" -gt "$cores" ] && cell="$cell (>${cores} CPUs)"
    row="$row | $cell"
  done
  ratio="n/a"
  if [ -n "${ips[2]:-}" ] && [ -n "${ips[16]:-}" ]; then
    ratio=$(awk -v a="${ips[2]}" -v b="${ips[16]}" 'BEGIN { printf "%.2fx", b / a }')
  fi
  echo "| $row | $ratio |"
  unset ips
done
rm -f /tmp/cpu_scaling.$$.err
echo ""
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
