#!/usr/bin/env bash
# Installs the Debian packages the build needs, then configures and builds into ./build.
# Usage: ./setup.sh [extra cmake args]      (runs apt-get through sudo when not root)
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

PACKAGES=(
  cmake g++ make pkg-config
  libopenblas-openmp-dev libopenblas-dev   # BLAS for the CPU path (OpenMP build: see CMakeLists.txt)
  libomp-dev                               # OpenMP
  nlohmann-json3-dev libcli11-dev doctest-dev
  libdcmtk-dev                             # DICOM (with JPEG and RLE codecs)
  dcmtk dicom3tools                        # mm-serve tests: storescu/dcmsend send, dsrdump/dciodvfy check SRs
  libinsighttoolkit5-dev                   # PNG and BMP (lib/imaging/itk_io.cpp; NIfTI is our own reader)
  libpng-dev libjpeg-dev libtiff-dev       # PNG header checks, JPEG and TIFF read directly (itk_io.cpp says why)
  libopenjp2-7-dev                         # JPEG 2000 in DICOM (DCMTK has no decoder for it)
  libcharls-dev                            # JPEG-LS in DICOM (DCMTK's CharLS fork rejects valid streams)
  python3 python3-numpy python3-pip        # the safetensors interop test
  python3-sklearn chromium                 # mm-eval: metric fixtures (sklearn); the HTML report test
  zlib1g-dev                               # deflate in zip archives (PyTorch checkpoints, .npz)
  libdnnl-dev                              # oneDNN: bf16 CPU inference (AMX / AVX512_BF16)
  ocl-icd-opencl-dev                       # oneDNN's CMake config requires OpenCL (a Recommends apt skips here)
  clang libclang-rt-dev                    # libFuzzer + sanitizers for fuzz/run.sh
  libopenmpi-dev openmpi-bin               # data-parallel mm-train across processes (mpirun)
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Python's safetensors package reads the files our writer produces in the tests.
if ! python3 -c "import safetensors, numpy" 2>/dev/null; then
  python3 -m pip install -q safetensors numpy 2>/dev/null ||
    python3 -m pip install -q --break-system-packages safetensors numpy
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j"$(nproc)"
