#!/usr/bin/env bash
# Style checks.
#   .ci/lint.sh format        every tracked .cc/.h file is as clang-format-14
#                             leaves it (seconds; part of .ci/run)
#   .ci/lint.sh tidy [BUILD]  clang-tidy-14 with .clang-tidy on every library
#                             source, from BUILD's compile_commands.json
#                             (minutes: ~9 CPU-minutes on this project)
# Exit 1 and the findings when there are any.
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-format}
case $what in
  format)
    out=$(git ls-files '*.cc' '*.h' 'runtime/*.inc' | xargs clang-format-14 --dry-run --Werror 2>&1)
    if [ -n "$out" ]; then
      echo "$out" | head -n 60
      echo "lint: files not clang-formatted (run: make format):"
      echo "$out" | sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: error.*/  \1/p' | sort -u
      exit 1
    fi
    echo "lint: $(git ls-files '*.cc' '*.h' 'runtime/*.inc' | wc -l) files clang-formatted"
    ;;
  tidy)
    build=${2:-build}
    [ -f "$build/compile_commands.json" ] || { echo "lint: $build/compile_commands.json is missing (build first)"; exit 1; }
    files=$(git ls-files 'schema/*.cc' 'store/*.cc' 'pack/*.cc' 'runtime/*.cc' 'quantize/*.cc' \
                         'search/*.cc' 'plot/*.cc' 'serve/*.cc' 'cli/*.cc')
    # A unity build (cli/, the tests) lists its batches in the database, not
    # its files: each file gets its batch's command, so that clang-tidy checks
    # every file on its own with the flags it builds with.
    db=$(mktemp -d)
    python3 - "$build/compile_commands.json" "$db/compile_commands.json" <<'PY' || exit 1
import json, re, sys
out = []
for e in json.load(open(sys.argv[1])):
    if re.search(r"/Unity/unity_[^/]*\.cxx$", e["file"]):
        for src in re.findall(r'^#include "([^"]+)"', open(e["file"]).read(), re.M):
            out.append(dict(e, file=src, command=e["command"].replace(e["file"], src)))
    else:
        out.append(e)
json.dump(out, open(sys.argv[2], "w"), indent=1)
PY
    log=$(mktemp)
    echo "$files" | xargs -P "$(nproc)" -n 4 clang-tidy-14 -p "$db" --quiet >"$log" 2>&1
    n=$(grep -c 'warning:' "$log")
    if [ "$n" != 0 ]; then
      grep -A3 'warning:' "$log" | head -n 200
      echo "lint: clang-tidy: $n findings in $(echo "$files" | wc -l) files"
      rm -rf "$log" "$db"
      exit 1
    fi
    rm -rf "$log" "$db"
    echo "lint: clang-tidy: no findings in $(echo "$files" | wc -l) files"
    ;;
  *) echo "usage: .ci/lint.sh format | tidy [BUILD]"; exit 2 ;;
esac
