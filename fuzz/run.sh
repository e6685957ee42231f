#!/usr/bin/env bash
# Builds every fuzz/fuzz_*.cpp as a libFuzzer target (clang, ASan + UBSan), then for each target
#   1. replays the committed corpus, each file once: the target's seeds and fuzz/regressions/<target>/
#      (every input that ever crashed, hung or ran out of memory);
#   2. fuzzes. By default (CI) a fixed number of executions with a fixed -seed, starting from the
#      committed corpus alone (new inputs go to a folder wiped first), so pass or fail depends on
#      the code, not on luck or on earlier runs. With FUZZ_SECONDS, a long session by hand: a random
#      seed, for that many seconds, growing a corpus kept in $FUZZ_BUILD_DIR/corpus-<target>.
# Any input that crashes, takes over 1 s (-timeout=1), passes 2 GiB RSS or leaks fails the run.
#
#   fuzz/run.sh                                   all targets, CI mode (see docs/fuzzing.md)
#   fuzz/run.sh fuzz_torch_pickle [more targets]  only these
#   FUZZ_SECONDS=600 fuzz/run.sh fuzz_nifti       a 10-minute random session for one target
#   FUZZ_REPLAY_ONLY=1 fuzz/run.sh                step 1 only
#
# A target declares what it needs in comment lines, so adding one needs no edit here:
#   // fuzz-sources: lib/... .cpp files to compile with it (paths from the repository root)
#   // fuzz-libs:    extra link arguments (e.g. -lz)
#   // fuzz-flags:   extra compile arguments, shell-expanded (e.g. $(pkg-config --cflags dcmtk))
#   // fuzz-seeds:   seed corpus directories (read, never written)
#   // fuzz-runs:    executions of the CI session (default 20000), sized to under a minute on 2 cores
# A finding is written to $FUZZ_BUILD_DIR/crash-<target>-* (or leak-/timeout-/oom-); reproduce it
# with $FUZZ_BUILD_DIR/<target> <file>, and once fixed commit it to fuzz/regressions/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

CXX=${FUZZ_CXX:-clang++}
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
CI_SEED=1  # any fixed value; changing it changes which inputs CI tries
COMMON=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -Ilib)
LIMITS=(-timeout=1 -rss_limit_mb=2048)

# A fixed -seed alone does not repeat a session: the comparisons libFuzzer learns from include
# pointer values, which address-space randomisation changes. CI runs without it where allowed.
norandom=()
if [ -z "${FUZZ_SECONDS:-}" ] && setarch "$(uname -m)" -R true 2>/dev/null; then norandom=(setarch "$(uname -m)" -R); fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for src in fuzz/fuzz_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no fuzz/fuzz_*.cpp targets"; exit 1; }

declared() { sed -n "s|^// fuzz-$1:||p" "$2" | tr '\n' ' '; }
# The object of library source $1 compiled with flags $2 (a target's expanded fuzz-flags).
object_of() { echo "$BUILD/obj/$(echo "$1 $2" | md5sum | cut -c1-12)-$(basename "$1" .cpp).o"; }

rm -rf "$BUILD/obj"  # always rebuilt: header changes are not tracked here
mkdir -p "$BUILD/obj"
# Each library source compiles once per run (per set of flags), shared by the targets listing
# it; all of them first, as parallel jobs (one per core), then the targets link one by one.
# A target's expanded flags and objects are kept for its link.
declare -A compiled=() target_flags=() target_objs=()
jobs=()
for name in "${targets[@]}"; do
  src="fuzz/$name.cpp"
  [ -f "$src" ] || { echo "fuzz: no $src"; exit 1; }
  sources=$(declared sources "$src")
  [ -n "${sources// }" ] || { echo "fuzz: $src has no '// fuzz-sources:' line"; exit 1; }
  flags=$(eval echo "$(declared flags "$src")")
  target_flags[$name]=$flags
  target_objs[$name]=""
  for lib_src in $sources; do
    obj=$(object_of "$lib_src" "$flags")
    target_objs[$name]+="$obj "
    [ -z "${compiled[$obj]:-}" ] || continue
    compiled[$obj]=1
    jobs+=("$obj" "$lib_src" "$flags")
  done
done
echo "fuzz: compiling $(( ${#jobs[@]} / 3 )) library sources on $(nproc) cores"
# Each job gets (object, source, flags) as $1 $2 $3; the compiler and COMMON hold no spaces.
export FUZZ_COMPILE="$CXX ${COMMON[*]} -fsanitize=fuzzer-no-link"
# shellcheck disable=SC2016
printf '%s\0' "${jobs[@]}" | xargs -0 -n 3 -P "$(nproc)" sh -c 'exec $FUZZ_COMPILE $3 -c "$2" -o "$1"' sh ||
  { echo "fuzz: a library source failed to compile (above)"; exit 1; }
for name in "${targets[@]}"; do
  src="fuzz/$name.cpp"
  echo "fuzz: building $name"
  # Object paths hold no spaces (a hash and a source's base name): word splitting lists them.
  # shellcheck disable=SC2046,SC2086
  "$CXX" "${COMMON[@]}" -fsanitize=fuzzer ${target_flags[$name]} "$src" ${target_objs[$name]} \
    $(declared libs "$src") -o "$BUILD/$name"
done

# Runs one libFuzzer command, logging to $log; on failure shows the report (without progress,
# dictionary and per-file lines) and stops the script. -timeout is wall-clock time, so a stalled
# machine can make a fast input look hung: an input that times out in the session but runs in time
# alone gets the whole (deterministic) command once more, where a real hang times out again.
run_logged() {
  local status attempt slow
  for attempt in 1 2; do
    status=0
    "$@" > "$log" 2>&1 || status=$?
    [ "$status" -ne 0 ] || return 0
    slow=$(sed -n 's/.*Test unit written to \(.*timeout-.*\)$/\1/p' "$log")
    if [ -z "$slow" ] && grep -q 'libFuzzer: timeout' "$log"; then slow=$(sed -n 's/^Running: //p' "$log" | tail -n 1); fi
    [ "$attempt" -eq 1 ] && [ -n "$slow" ] && "$BUILD/$name" "${LIMITS[@]}" "$slow" > /dev/null 2>&1 || break
    echo "fuzz: $name: $slow timed out, but not when run alone (a stalled machine?); running again"
  done
  grep -v -E '^(#[0-9]+|"|Running: |Executed )' "$log" | tail -n 40
  echo "fuzz: $name failed (exit $status, log: $log); the input is named above, or in $BUILD/crash-$name-* (or leak-/timeout-/oom-)"
  exit "$status"
}

for name in "${targets[@]}"; do
  src="fuzz/$name.cpp"
  read -r -a seeds <<< "$(declared seeds "$src")"
  regressions="fuzz/regressions/$name"
  mapfile -t committed < <(find "${seeds[@]}" "$regressions" -type f ! -name '.*' ! -name '*.md' ! -name '*.py' 2>/dev/null | sort)
  [ ${#committed[@]} -gt 0 ] || { echo "fuzz: $name has no seeds or regressions to replay"; exit 1; }
  log="$BUILD/$name-replay.log"
  echo "fuzz: $name: replaying ${#committed[@]} committed inputs (log: $log)"
  run_logged "$BUILD/$name" "${LIMITS[@]}" -artifact_prefix="$BUILD/crash-$name-" "${committed[@]}"
  echo "fuzz: $name: all ${#committed[@]} ran clean"
  [ -z "${FUZZ_REPLAY_ONLY:-}" ] || continue

  log="$BUILD/$name.log"
  if [ -n "${FUZZ_SECONDS:-}" ]; then
    corpus="$BUILD/corpus-$name"  # kept: a later session starts where this one stopped
    mode=(-max_total_time="$FUZZ_SECONDS")
    echo "fuzz: $name: fuzzing for ${FUZZ_SECONDS}s, random seed (log: $log)"
  else
    corpus="$BUILD/new-$name"  # wiped: CI starts from the committed corpus alone
    rm -rf "$corpus"
    runs=$(declared runs "$src"); runs=${runs// }
    mode=(-seed="$CI_SEED" -runs="${runs:-20000}" -reload=0)
    echo "fuzz: $name: fuzzing ${runs:-20000} executions, -seed=$CI_SEED${norandom[*]:+, no ASLR} (log: $log)"
  fi
  mkdir -p "$corpus"
  # The first folder receives new inputs; the committed ones are only read.
  run_logged "${norandom[@]}" "$BUILD/$name" "${LIMITS[@]}" "${mode[@]}" -print_final_stats=1 \
    -artifact_prefix="$BUILD/crash-$name-" "$corpus" "${seeds[@]}" "$regressions"
  echo "fuzz: $name: $(grep -E '^Done [0-9]+ runs' "$log"), clean; peak RSS $(sed -n 's/^stat::peak_rss_mb: *//p' "$log") MB"
done
echo "fuzz: all targets ran clean"
