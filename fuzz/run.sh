#!/usr/bin/env bash
# Builds every fuzz/fuzz_*.cpp as a libFuzzer target (clang, ASan + UBSan) and
# runs each for a bounded time; exits non-zero on the first crash.
#
#   fuzz/run.sh                  all targets, sharing FUZZ_TOTAL_SECONDS (default 120)
#   fuzz/run.sh fuzz_torch_pickle [more targets]   only these
#   FUZZ_SECONDS=600 fuzz/run.sh fuzz_torch_checkpoint   a longer session for one target
#
# A target declares what it needs in comment lines, so adding one needs no edit here:
#   // fuzz-sources: lib/... .cpp files to compile with it (paths from the repository root)
#   // fuzz-libs:    extra link arguments (e.g. -lz)
#   // fuzz-flags:   extra compile arguments, shell-expanded (e.g. $(pkg-config --cflags dcmtk))
#   // fuzz-seeds:   seed corpus directories (read, never written)
# New inputs found go to $FUZZ_BUILD_DIR/corpus-<target>, crashes to $FUZZ_BUILD_DIR/crash-<target>-*;
# reproduce one with: $FUZZ_BUILD_DIR/<target> <crash file>
set -euo pipefail
cd "$(dirname "$0")/.."

CXX=${FUZZ_CXX:-clang++}
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
TOTAL=${FUZZ_TOTAL_SECONDS:-120}
COMMON=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -Ilib)

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for src in fuzz/fuzz_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no fuzz/fuzz_*.cpp targets"; exit 1; }
# Whatever the number of targets, the whole run stays within TOTAL (CI's budget), at least 10 s each.
per_target=${FUZZ_SECONDS:-$(( TOTAL / ${#targets[@]} > 10 ? TOTAL / ${#targets[@]} : 10 ))}

declared() { sed -n "s|^// fuzz-$1:||p" "$2" | tr '\n' ' '; }

rm -rf "$BUILD/obj"  # always rebuilt: header changes are not tracked here
mkdir -p "$BUILD/obj"
declare -A compiled=()
for name in "${targets[@]}"; do
  src="fuzz/$name.cpp"
  [ -f "$src" ] || { echo "fuzz: no $src"; exit 1; }
  sources=$(declared sources "$src")
  [ -n "${sources// }" ] || { echo "fuzz: $src has no '// fuzz-sources:' line"; exit 1; }
  flags=$(eval echo "$(declared flags "$src")")
  echo "fuzz: building $name"
  objs=()
  for lib_src in $sources; do  # each library source compiles once per run, shared by the targets listing it
    obj="$BUILD/obj/$(echo "$lib_src $flags" | md5sum | cut -c1-12)-$(basename "$lib_src" .cpp).o"
    if [ -z "${compiled[$obj]:-}" ]; then
      # shellcheck disable=SC2086
      "$CXX" "${COMMON[@]}" -fsanitize=fuzzer-no-link $flags -c "$lib_src" -o "$obj"
      compiled[$obj]=1
    fi
    objs+=("$obj")
  done
  # shellcheck disable=SC2046,SC2086
  "$CXX" "${COMMON[@]}" -fsanitize=fuzzer $flags "$src" "${objs[@]}" $(declared libs "$src") -o "$BUILD/$name"
done

for name in "${targets[@]}"; do
  corpus="$BUILD/corpus-$name"
  log="$BUILD/$name.log"
  mkdir -p "$corpus"
  echo "fuzz: running $name for ${per_target}s (log: $log)"
  status=0
  # shellcheck disable=SC2046
  "$BUILD/$name" -max_total_time="$per_target" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
    -artifact_prefix="$BUILD/crash-$name-" "$corpus" $(declared seeds "fuzz/$name.cpp") > "$log" 2>&1 || status=$?
  grep -v -E '^(#[0-9]+|")' "$log" | tail -n 40  # drop progress and dictionary lines
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $name failed (exit $status); the input is in $BUILD/crash-$name-* (or leak-/timeout-/oom-)"
    exit "$status"
  fi
done
echo "fuzz: all targets ran clean"
