#!/usr/bin/env bash
# Import throughput: `fqpack import` against the practical limits of the same
# bytes, read from the page cache, in the same run: `xxh128sum` (hashing),
# `zstd -1` (compression), and `cp` + `sync` (what the disk takes: an import
# writes and fsyncs every byte it stores). Prints MB/s and the ratios.
#
#   bench/import_bench.sh [build-dir] [size-GB]
# Inputs: the ../shared ladders (when FQ_TESTDATA is set) and a generated
# F16 checkpoint of about size-GB (default 1).
set -euo pipefail
BUILD=${1:-build}
GB=${2:-1}
FQ="$BUILD/cli/fqpack"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fqpack-bench-XXXXXX")
trap 'rm -rf "$WORK"' EXIT

now() { date +%s.%N; }
mbps() { python3 -c "import sys; print(f'{$1/1e6/($3-$2):.0f}')"; }

measure() {  # label, files...
  local label=$1; shift
  local bytes
  bytes=$(cat "$@" | wc -c)
  cat "$@" > /dev/null  # warm the page cache
  local t0 t1 t2 t3 t4 t5
  t0=$(now); xxh128sum "$@" > /dev/null; t1=$(now)
  t2=$(now); for f in "$@"; do zstd -1 -q -c -T1 "$f" > /dev/null; done; t3=$(now)
  rm -rf "$WORK/store"
  "$FQ" --quiet --store "$WORK/store" init > /dev/null
  t4=$(now); "$FQ" --quiet --store "$WORK/store" import --model bench "$@" > /dev/null; t5=$(now)
  mkdir -p "$WORK/copy"
  t6=$(now); cp "$@" "$WORK/copy/" && sync "$WORK/copy"/*; t7=$(now)
  rm -rf "$WORK/copy"
  local x z f c
  x=$(mbps "$bytes" "$t0" "$t1"); z=$(mbps "$bytes" "$t2" "$t3"); f=$(mbps "$bytes" "$t4" "$t5"); c=$(mbps "$bytes" "$t6" "$t7")
  printf "%-26s %7.1f MB | xxh128sum %6s | zstd -1 %5s | cp+sync %5s | fqpack import %5s MB/s = %.2fx zstd -1, %.2fx cp+sync\n" \
    "$label" "$(python3 -c "print($bytes/1e6)")" "$x" "$z" "$c" "$f" \
    "$(python3 -c "print($f/$z)")" "$(python3 -c "print($f/$c)")"
}

if [ -n "${FQ_TESTDATA:-}" ]; then
  measure "stories260K ladder" "$FQ_TESTDATA"/models/stories260K/*.gguf
  measure "tinystories-3M ladder" "$FQ_TESTDATA"/models/tinystories-3M/*.gguf
fi
# n_embd 2048, n_ff 5632 as in a 1B-class model; layers set the size.
LAYERS=$(python3 -c "print(max(1, round($GB * 1e9 / 2 / (4*2048*2048 + 3*2048*5632))))")
"$FQ" --quiet synth --type F16 --embd 2048 --ff 5632 --heads 32 --kv-heads 32 --vocab 32000 \
  --layers "$LAYERS" -o "$WORK/big-F16.gguf" > /dev/null
measure "generated F16, $LAYERS layers" "$WORK/big-F16.gguf"
