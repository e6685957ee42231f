#!/usr/bin/env bash
# Data-parallel mm-train across CPU processes (MPI), against one process at the same global batch:
#   1 process, --batch-size 20   vs   mpirun -np 2, --batch-size 10 --sync-bn
# on BreastMNIST with a dims 8..64 model at 32 px, 2 epochs. The train and val losses of
# every epoch must agree within 5e-5 (relative): the same samples, the same steps, BatchNorm
# over the same global batch; only float summation orders differ, and the GEMMs' rounding at
# the halved batch shapes (measured: 4e-9 train, 3e-6 val on an AVX-512 Xeon; 4e-9 train,
# 1.1e-5 val after epoch 1 with oneDNN's AVX2 sgemm on a Zen 3). Then a run stopped after epoch 1 with 2 processes resumes with 1.
# Usage: mpi_train_test.sh MM_TRAIN DATA_DIR SCRATCH
set -u
TRAIN=$1 DATA=$2/medmnist/breastmnist.npz OUT=$3
if [ ! -f "$DATA" ]; then echo "skipped: $DATA is absent"; exit 0; fi
if ! command -v mpirun > /dev/null; then echo "skipped: no mpirun (apt-get install openmpi-bin)"; exit 0; fi
if ! "$TRAIN" --help | grep -q -- --sync-bn; then echo "FAIL: mm-train has no --sync-bn"; exit 1; fi
MPI=(mpirun --oversubscribe --bind-to none -np 2)
[ "$(id -u)" -eq 0 ] && MPI+=(--allow-run-as-root)
rm -rf "$OUT" && mkdir -p "$OUT"
COMMON=(--data "$DATA" --dims 8,16,32,64 --depths 1,1,1,1 --image-size 32 --epochs 2 --lr 1e-4
        --warmup-epochs 0.5 --drop-path 0 --seed 3 --threads 1 -q)
"$TRAIN" "${COMMON[@]}" --batch-size 20 --out "$OUT/one" > "$OUT/one.log" 2>&1 || { cat "$OUT/one.log"; exit 1; }
"${MPI[@]}" "$TRAIN" "${COMMON[@]}" --batch-size 10 --sync-bn --out "$OUT/two" > "$OUT/two.log" 2>&1 ||
  { cat "$OUT/two.log"; echo "FAIL: the 2-process run"; exit 1; }
python3 - "$OUT/one/metrics.jsonl" "$OUT/two/metrics.jsonl" <<'PY' || exit 1
import json, sys
one = [json.loads(l) for l in open(sys.argv[1])]
two = [json.loads(l) for l in open(sys.argv[2])]
assert len(one) == len(two) == 2, (len(one), len(two))
worst = 0.0
for a, b in zip(one, two):
    assert a["step"] == b["step"], (a["step"], b["step"])
    for key in ("train_loss", "val_loss"):
        rel = abs(a[key] - b[key]) / abs(a[key])
        worst = max(worst, rel)
        print(f"epoch {a['epoch']} {key}: 1 process {a[key]:.9f}, 2 processes {b[key]:.9f}, relative {rel:.1e}")
if worst > 5e-5:
    print(f"FAIL: the loss curves differ by {worst:.1e} > 5e-5")
    sys.exit(1)
PY
# Only rank 0 wrote the run directory; a 2-process run stopped after epoch 1 resumes as one process.
"${MPI[@]}" "$TRAIN" "${COMMON[@]}" --batch-size 10 --sync-bn --out "$OUT/parts" --stop-after-epoch 1 \
  > "$OUT/parts.log" 2>&1 || { cat "$OUT/parts.log"; echo "FAIL: the stopped 2-process run"; exit 1; }
"$TRAIN" --resume "$OUT/parts" -q > "$OUT/resume.log" 2>&1 || { cat "$OUT/resume.log"; echo "FAIL: resume"; exit 1; }
[ "$(wc -l < "$OUT/parts/metrics.jsonl")" -eq 2 ] || { echo "FAIL: the resumed run did not finish epoch 2"; exit 1; }
echo "data-parallel mm-train: OK"
