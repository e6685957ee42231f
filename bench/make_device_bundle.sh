#!/usr/bin/env bash
# Builds mm-predict, mm-eval and mm-train HERE with CUDA and the image readers,
# and gathers what bench/device_pipeline.sh needs on a GPU machine that has
# CUDA but no DCMTK, ITK, OpenBLAS, pydicom or encoders:
#
#   .device-data/bundle/bin       the three executables, stripped
#   .device-data/bundle/lib.tar.xz  the shared libraries ldd lists that are not
#                                 glibc, the GCC runtime (libstdc++, libgcc_s)
#                                 or CUDA's (libcudart, libcublas*: the device
#                                 has them in /usr/local/cuda/lib64); xz, as
#                                 OpenBLAS and ICU's data are 66 MB unpacked
#   .device-data/bundle/share/dicom.dic  DCMTK's data dictionary (DCMDICTPATH)
#   .device-data/bundle/templates  the CT slice per transfer syntax, for
#                                 bench/make_ct_folder.py --templates (no pydicom)
#   .device-data/bundle/models    a dims 48..384, 224 px model (one epoch on
#                                 16 brain-MRI JPEGs: the weights do not matter)
#
#   bench/make_device_bundle.sh [BUILD_DIR]      (default build-h14-cuda)
#
# It builds what is committed (HEAD, exported to /tmp/mm-device-bundle-src),
# not the work in progress beside it in the tree. The first build takes about
# 20 minutes on 2 cores (the CUDA kernels); later ones reuse ccache.
#
# Build flags: -march=x86-64-v3 instead of -march=native (the device's Xeon
# need not have this machine's AVX-512 or AMX); no oneDNN (the CPU bf16 path,
# 39 MB, is not what the device runs) and no MPI.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-h14-cuda}
bundle=.device-data/bundle
export PATH=/usr/local/cuda/bin:$PATH

src=/tmp/mm-device-bundle-src
rm -rf "$src" && mkdir -p "$src" && git archive HEAD | tar -x -C "$src"
echo "building HEAD $(git rev-parse --short HEAD) from $src"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMM_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DMM_NATIVE=OFF "-DCMAKE_CXX_FLAGS=-march=x86-64-v3" -DCMAKE_DISABLE_FIND_PACKAGE_dnnl=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON -DMM_BUILD_TESTS=OFF \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build "$build" -j2 --target mm-predict mm-eval mm-train

rm -rf "$bundle"
mkdir -p "$bundle"/{bin,lib,share,templates,models}
for exe in mm-predict mm-eval mm-train; do
  strip -o "$bundle/bin/$exe" "$build/$exe"
done
# Everything the loader resolves, less what the device has of its own.
system='^(linux-vdso|ld-linux|libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnvidia)\.'
for exe in "$bundle"/bin/*; do
  ldd "$exe" | awk '$3 ~ /^\// { print $1, $3 }'
done | sort -u | while read -r name path; do
  [[ $name =~ $system ]] && continue
  cp -L "$path" "$bundle/lib/$name"
done
(cd "$bundle" && tar -cJf lib.tar.xz lib && rm -rf lib)
dict=$(ls /usr/share/libdcmtk*/dicom.dic | head -1)
cp "$dict" "$bundle/share/dicom.dic"

/usr/bin/python3 bench/make_ct_folder.py --write-templates "$bundle/templates" \
  --syntax explicit,jpeg-lossless,jpeg-ls,j2k

# A 224 px model with the issue's dims: one epoch on 16 brain-MRI JPEGs.
data=../shared/data/brain-tumor-mri/Training
work=$(mktemp -d)
{ echo path,label
  for c in glioma meningioma notumor pituitary; do ls "$data/$c"/*.jpg | head -4 | sed "s|\$|,$c|"; done
} >"$work/tiny.csv"
"$build/mm-train" --data "$work/tiny.csv" --out "$work/m48" --dims 48,96,192,384 --depths 2,2,4,2 \
  --image-size 224 --epochs 1 --batch-size 8 --val-fraction 0.25 --device cpu -q >/dev/null
cp "$work/m48/best.safetensors" "$bundle/models/dims48-224.safetensors"
rm -rf "$work"

du -sh "$bundle" "$bundle"/*
size=$(du -sm "$bundle" | cut -f1)
[ "$size" -lt 40 ] || { echo "make_device_bundle.sh: the bundle is $size MB (40 or more)" >&2; exit 1; }
