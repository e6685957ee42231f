#!/usr/bin/env bash
# Builds mm-tests and mm-bench HERE for the GPU machine (sm_90, the same CUDA 13.0) and packs
# them into .device-data/bin.tar.xz (about 19 MB), so that a device call runs them at once
# instead of spending 130-156 s of its device time on a build:
#
#   bench/make_device_tests.sh [BUILD_DIR]   # first time ~20 minutes on 2 cores, then incremental
#   run(command="mkdir -p b && tar xJf .device-data/bin.tar.xz -C b && \
#                LD_LIBRARY_PATH=/usr/local/cuda/lib64 b/mm-tests -tc='cuda*' && \
#                LD_LIBRARY_PATH=/usr/local/cuda/lib64 b/mm-bench --device cuda --batch 128 --precision bf16",
#       carry=[".device-data/bin.tar.xz"])
#
# What the GPU machine lacks is left out: the image readers (DCMTK, ITK), oneDNN and MPI;
# -march=native too (this machine's AVX-512 flavour need not be the device's). What the
# binaries load from the system there: OpenBLAS, libgomp, zlib, and CUDA's own libraries
# from /usr/local/cuda/lib64. It builds the working tree as it is (uncommitted changes
# included), in BUILD_DIR (default build-device-tests/). CONFIGURE_ONLY=1 configures BUILD_DIR
# and stops (bench/device_brain_recipe.sh builds its own target there).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-device-tests}
export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMM_WITH_IMAGING=OFF -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DMM_NATIVE=OFF -DCMAKE_DISABLE_FIND_PACKAGE_dnnl=ON -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON >/dev/null
[ "${CONFIGURE_ONLY:-0}" = 1 ] && exit 0
cmake --build "$build" -j"$(nproc)" --target mm-tests mm-bench > "$build/build.log" 2>&1 ||
  { grep -E "error|Error" "$build/build.log" | head -40; exit 1; }
stage=$(mktemp -d)
strip -o "$stage/mm-tests" "$build/mm-tests"
strip -o "$stage/mm-bench" "$build/mm-bench"
mkdir -p .device-data
tar -C "$stage" -cf - mm-tests mm-bench | xz -T0 >.device-data/bin.tar.xz
rm -rf "$stage"
ls -la .device-data/bin.tar.xz
