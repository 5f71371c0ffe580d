#!/usr/bin/env bash
# Runs every fuzz target of a FQPACK_FUZZ build for SECONDS each, JOBS at a
# time, each on a copy of its seed corpus (tests/fuzz/corpus/<target>) with
# its dictionary. Fails when any target finds a crash, a leak, a timeout or
# runs out of memory; the input that did it is kept under
# BUILD/fuzz-out/<target>/crashes/ and printed in base64 (CI logs outlive the
# build directory). Keep it as a regression with:
#   cp BUILD/fuzz-out/<target>/crashes/<file> tests/fuzz/regressions/<target>/
#
#   .ci/fuzz.sh [BUILD] [SECONDS] [JOBS]
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-asan}
seconds=${2:-30}
jobs=${3:-2}
out="$build/fuzz-out"

targets=()
for f in tests/fuzz/corpus/*/; do
  t=$(basename "$f")
  [ -x "$build/tests/fuzz/$t" ] || { echo "fuzz: $build/tests/fuzz/$t is missing (configure with FQPACK_FUZZ=ON)"; exit 1; }
  targets+=("$t")
done

rm -rf "$out"
mkdir -p "$out"
# Scratch stores and files of the targets; a crashing target leaves its own.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/fqpack-fuzz.XXXXXX")
[ -d /dev/shm ] && scratch=$(mktemp -d /dev/shm/fqpack-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export FQ_FUZZ_SCRATCH="$scratch"
# Leaks count as findings; symbolized stacks.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"

run_one() {
  local t=$1 build=$2 seconds=$3 out=$4
  local dir="$out/$t"
  mkdir -p "$dir/corpus" "$dir/crashes"
  cp tests/fuzz/corpus/"$t"/* "$dir/corpus/"
  local dict="tests/fuzz/$t.dict"
  case $t in fuzz_gguf*) dict=tests/fuzz/fuzz_gguf.dict ;; esac
  local args=(-max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
              -artifact_prefix="$dir/crashes/")
  [ -f "$dict" ] && args+=(-dict="$dict")
  "$build/tests/fuzz/$t" "${args[@]}" "$dir/corpus" >"$dir/log" 2>&1
  echo $? >"$dir/rc"
}
export -f run_one

start=$(date +%s)
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {} "$build" "$seconds" "$out"

failed=0
printf '%-18s %10s %8s %8s %7s  %s\n' target execs cov ft corpus result
for t in "${targets[@]}"; do
  dir="$out/$t"
  rc=$(cat "$dir/rc" 2>/dev/null || echo 1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$dir/log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  units=$(ls "$dir/corpus" | wc -l)
  result=ok
  [ "$rc" = 0 ] || { result="FAILED (exit $rc)"; failed=1; }
  printf '%-18s %10s %8s %8s %7s  %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$units" "$result"
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, $jobs at a time, $(($(date +%s) - start))s"

if [ $failed = 1 ]; then
  for t in "${targets[@]}"; do
    dir="$out/$t"
    [ "$(cat "$dir/rc" 2>/dev/null)" = 0 ] && continue
    echo "==== $t: $dir/log (last 60 lines)"
    tail -n 60 "$dir/log"
    for c in "$dir"/crashes/*; do
      [ -f "$c" ] || continue
      echo "==== $t: input kept as $c ($(stat -c %s "$c") bytes); base64:"
      base64 -w 100 "$c" | head -c 200000
      echo "keep it: cp $c tests/fuzz/regressions/$t/"
    done
  done
  exit 1
fi
