#!/usr/bin/env bash
# Every option a tool's --help lists appears on its docs page (docs/<tool>.md) as a whole
# word (`--out`, not only as part of `--output`). Issue 13: the pages name every option.
# A tool built without what it needs (mm-serve without DCMTK's network module says so and
# exits non-zero) is skipped.
#
#   test/docs_options_test.sh DOCS_DIR TOOL_BINARY...
set -u -o pipefail
docs=$1
shift
status=0
for bin in "$@"; do
  tool=$(basename "$bin")
  page=$docs/$tool.md
  if [ ! -f "$page" ]; then
    echo "FAIL: $tool has no docs page ($page)"
    status=1
    continue
  fi
  if ! help=$("$bin" --help 2>&1); then
    if printf '%s' "$help" | grep -q "built without"; then echo "skip: $help"; continue; fi
    echo "FAIL: $tool --help exited non-zero: $help"
    status=1
    continue
  fi
  # CLI11 lists options as "  -q,--quiet", "  --size,--image-size INT": every --name on
  # the option lines (those starting with a dash after the indent), not words in the prose.
  options=$(printf '%s\n' "$help" | grep -E '^\s+-' | grep -oE -- '--[a-z0-9][a-z0-9-]*' | sort -u)
  [ -n "$options" ] || { echo "FAIL: $tool --help lists no options"; status=1; continue; }
  missing=""
  for opt in $options; do
    grep -qE -- "(^|[^a-z0-9-])$opt([^a-z0-9-]|\$)" "$page" || missing="$missing $opt"
  done
  if [ -n "$missing" ]; then
    echo "FAIL: $page does not name:$missing"
    status=1
  else
    echo "ok: $tool, $(echo "$options" | wc -l) options on $page"
  fi
done
exit $status
