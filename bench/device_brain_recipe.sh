#!/usr/bin/env bash
# The brain-tumour MRI recipe of the GPU-training issue on the GPU machine, in one device
# call (docs/mm-train.md, "The public code's protocol").
#
# The shared JPEGs (64 MiB) do not fit beside the working tree in one call, so here,
# first, they are transcoded losslessly (jpegtran -arithmetic -copy none: the same DCT
# coefficients, so the same pixels, 58 MiB; Debian's libjpeg-turbo-progs):
#
#   bench/device_brain_recipe.sh prepare ../shared/data/brain-tumor-mri
#
# and the call leaves share/models/*.safetensors and test/fixtures behind (move them out of
# the tree for the call, back after it; the tree is then 2.5 MiB):
#
#   run(command="bench/device_brain_recipe.sh run", carry=[".device-data/prefix", ".device-data/brain"])
#
# .device-data/prefix: the header-only dependencies the GPU machine lacks (nlohmann_json,
# CLI11, doctest: their include folders and CMake package files copied from this machine).
# Or build mm-train here instead, which saves the call its build (about 2 minutes there):
#
#   bench/device_brain_recipe.sh build            # -> .device-data/mm-train.xz (about 9 MB)
#   run(command="SEEDS='0 1 2' bench/device_brain_recipe.sh run",
#       carry=[".device-data/mm-train.xz", ".device-data/brain"])
#
# run: builds mm-train (CUDA, no image readers: the data travels as an npz) unless
# .device-data/mm-train.xz is there, packs the npz with share/models/make_brain_mri_npz.py
# (VAL_IS_TEST=1, the default: the test images are also the val split, as the public
# train.py selects its epoch), trains once per seed of SEEDS (default 0), about 50 s each on
# an H100, and leaves each seed's metrics.jsonl and test_metrics.json in $OUT/seed<N>/.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  src=$2 dst=.device-data/brain
  rm -rf "$dst" && mkdir -p "$dst"
  (cd "$src" && find Training Testing -name '*.jpg') | while read -r f; do
    mkdir -p "$dst/$(dirname "$f")"
    jpegtran -arithmetic -copy none "$src/$f" >"$dst/$f"
  done
  cp "$src/test-duplicates-of-train.txt" "$dst/"
  du -sh "$dst"
  ;;
build)
  CONFIGURE_ONLY=1 bench/make_device_tests.sh  # the same sm_90 configuration as the tests' build
  cmake --build build-device-tests -j"$(nproc)" --target mm-train >/dev/null
  strip -o /tmp/mm-train.$$ build-device-tests/mm-train
  xz -T0 -c /tmp/mm-train.$$ >.device-data/mm-train.xz && rm /tmp/mm-train.$$
  ls -la .device-data/mm-train.xz
  ;;
run)
  export PATH=/usr/local/cuda/bin:$PATH LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
  train=/tmp/mm-train
  if [ -f .device-data/mm-train.xz ]; then
    xz -dc .device-data/mm-train.xz >$train && chmod +x $train
  else
    cmake -S . -B build-dev -DCMAKE_BUILD_TYPE=Release -DMM_WITH_IMAGING=OFF -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DCMAKE_PREFIX_PATH="$PWD/.device-data/prefix" -DCMAKE_DISABLE_FIND_PACKAGE_dnnl=ON \
      -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON >/dev/null
    cmake --build build-dev -j"$(nproc)" --target mm-train >/dev/null
    train=./build-dev/mm-train
  fi
  flag=$([ "${VAL_IS_TEST:-1}" = 1 ] && echo --val-is-test || true)
  python3 share/models/make_brain_mri_npz.py $flag .device-data/brain /tmp/brain.npz
  for seed in ${SEEDS:-0}; do
    rm -rf /tmp/runs
    /usr/bin/time -f "seed $seed: mm-train wall %e s" $train --data /tmp/brain.npz --out /tmp/runs/brain \
      --dims 48,96,192,384 --depths 2,2,4,2 --image-size 224 --epochs 14 --batch-size 64 --lr 3e-4 \
      --weight-decay 0.05 --drop-path 0.1 --augment flip,translate --select accuracy --seed "$seed" \
      --device cuda --precision bf16 -q
    mkdir -p "${OUT:-.}/seed$seed"
    cp /tmp/runs/brain/metrics.jsonl /tmp/runs/brain/test_metrics.json "${OUT:-.}/seed$seed/"
  done
  ;;
*)
  echo "usage: $0 prepare BRAIN_MRI_FOLDER | build | run" >&2
  exit 2
  ;;
esac
