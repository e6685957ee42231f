#!/usr/bin/env bash
# Builds mm-predict, mm-eval and mm-train HERE with CUDA and the image readers,
# and gathers what bench/device_pipeline.sh needs on a GPU machine that has
# CUDA but no DCMTK, ITK, OpenBLAS, pydicom or encoders, into .device-data/bundle
# (about 25 MB):
#
#   payload.tar.xz  bin/: the three executables, stripped; lib/: the shared
#                   libraries ldd lists that are not glibc, the GCC runtime
#                   (libstdc++, libgcc_s) or CUDA's (libcudart, libcublas*: the
#                   device has them in /usr/local/cuda/lib64). xz -9: unpacked
#                   they are 150 MB (OpenBLAS 37 MB, ICU's data 31 MB, through
#                   DCMTK's libxml2; each executable 17 MB, mostly the same
#                   CUDA kernels, which xz's 64 MB window stores once)
#   share/dicom.dic DCMTK's data dictionary (DCMDICTPATH)
#   templates/      the CT slice per transfer syntax, for
#                   bench/make_ct_folder.py --templates (no pydicom needed)
#
# No model file: device_pipeline.sh makes its models with one mm-train epoch
# there (the weights do not matter for speed).
#
#   bench/make_device_bundle.sh [BUILD_DIR]      (default build-h14-cuda)
#
# It builds what is committed (HEAD, exported to /tmp/mm-device-bundle-src),
# not the work in progress beside it in the tree. The first build takes about
# 20 minutes on 2 cores (the CUDA kernels); later ones reuse ccache where it is installed.
#
# Build flags: -march=$MARCH (default x86-64-v3: AVX2, FMA) instead of
# -march=native (the device's Xeon need not have this machine's AVX-512 or
# AMX; device_pipeline.sh logs whether it has AVX-512, and MARCH=x86-64-v4
# makes the resize's double sums 8 wide instead of 4: 0.30 -> 0.15 ms per CT
# slice here); no oneDNN (the CPU bf16 path, 39 MB, is not what the device
# runs) and no MPI.
#
# Needs here, besides the build's packages: pydicom (python3-pydicom), DCMTK's
# dcmcjpeg and dcmcjpls, and GDCM's gdcmconv (libgdcm-tools) for the template
# step. setup.sh installs neither pydicom nor gdcmconv, so they are checked
# first, before the build.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-h14-cuda}
missing=()
/usr/bin/python3 -c 'import pydicom' 2>/dev/null || missing+=("pydicom (python3-pydicom)")
for tool in dcmcjpeg dcmcjpls gdcmconv; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "make_device_bundle.sh: missing for the CT templates: ${missing[*]}" >&2
  exit 1
fi
bundle=.device-data/bundle
export PATH=/usr/local/cuda/bin:$PATH

src=/tmp/mm-device-bundle-src
if [ "$(cat "$src/.head" 2>/dev/null)" != "$(git rev-parse HEAD)" ]; then  # else keep it (and the build's timestamps)
  rm -rf "$src" && mkdir -p "$src" && git archive HEAD | tar -x -C "$src" && git rev-parse HEAD >"$src/.head"
fi
echo "building HEAD $(git rev-parse --short HEAD) from $src"
launcher=()  # ccache where installed (setup.sh does not install it)
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMM_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DMM_NATIVE=OFF "-DCMAKE_CXX_FLAGS=-march=${MARCH:-x86-64-v3}" -DCMAKE_DISABLE_FIND_PACKAGE_dnnl=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON -DMM_BUILD_TESTS=OFF "${launcher[@]}" >/dev/null
cmake --build "$build" -j2 --target mm-predict mm-eval mm-train

rm -rf "$bundle"
mkdir -p "$bundle"/{share,templates} "$bundle/payload"/{bin,lib}
for exe in mm-predict mm-eval mm-train; do
  strip -o "$bundle/payload/bin/$exe" "$build/$exe"
done
# Everything the loader resolves, less what the device has of its own.
system='^(linux-vdso|ld-linux|libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnvidia)\.'
for exe in "$bundle"/payload/bin/*; do
  ldd "$exe" | awk '$3 ~ /^\// { print $1, $3 }'
done | sort -u | while read -r name path; do
  [[ $name =~ $system ]] && continue
  cp -L "$path" "$bundle/payload/lib/$name"
done
du -sh "$bundle/payload/bin" "$bundle/payload/lib"
tar -C "$bundle/payload" -cf - bin lib | xz -9 -T1 >"$bundle/payload.tar.xz"
rm -rf "$bundle/payload"
dict=$(ls /usr/share/libdcmtk*/dicom.dic)
cp "${dict%%$'\n'*}" "$bundle/share/dicom.dic"

/usr/bin/python3 bench/make_ct_folder.py --write-templates "$bundle/templates" \
  --syntax explicit,jpeg-lossless,jpeg-ls,j2k

du -sh "$bundle" "$bundle"/*
size=$(du -sm "$bundle" | cut -f1)
[ "$size" -lt 40 ] || { echo "make_device_bundle.sh: the bundle is $size MB (40 or more)" >&2; exit 1; }
