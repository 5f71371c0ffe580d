#!/usr/bin/env bash
# The real memory-pressure runs of the README ("The budget from the device"):
# builds a raw pack, then runs bench/pressure_run (fqpack serve --budget
# auto against a hog process in steps) on it.
#
#   bench/pressure_run.sh [BUILD] real        tinystories-3M, F32 > Q8_0 > Q4_K_M > Q2_K
#                                             (needs FQ_TESTDATA), hog steps of 2 MiB
#   bench/pressure_run.sh [BUILD] generated   a generated 12 x 1024 llama (vocab 32000),
#                                             Q8_0 > Q4_K > Q2_K, hog steps of 40 MiB
#
# Outputs go to pressure-out/<kind>/ (timeline.csv, transitions.json,
# server.log, pressure.png, pressure.svg); the summary on stdout.
set -euo pipefail
BUILD=${1:-build}
KIND=${2:-generated}
FQ="$BUILD/cli/fqpack"
RUN="$BUILD/bench/pressure_run"
[ -x "$FQ" ] && [ -x "$RUN" ] || { echo "build first: cmake --build $BUILD --target fqpack pressure_run" >&2; exit 2; }
OUT=pressure-out/$KIND
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
DATA=${FQ_TESTDATA:-../shared/data}
EVAL=$DATA/text/tinystories_val.ppl.txt
CALIB=$DATA/text/tinystories.txt
[ -f "$CALIB" ] || { echo "needs FQ_TESTDATA (calibration and evaluation text)" >&2; exit 2; }
fq() { echo "+ fqpack $*" >&2; "$FQ" --store "$WORK/st" "$@"; }
fq init >/dev/null

case "$KIND" in
  real)
    M=$DATA/models/tinystories-3M
    fq import "$M/tinystories-3M-F32.gguf" "$M/tinystories-3M-Q8_0.gguf" \
      "$M/tinystories-3M-Q4_K_M.gguf" "$M/tinystories-3M-Q2_K.gguf" >/dev/null
    fq search --up F32 --mid Q8_0,Q4_K_M --low Q2_K --calib "$CALIB" --tokens 2048 -q
    fq pack --codec raw -o "$WORK/model.fqpack" >/dev/null
    "$RUN" --fqpack "$FQ" --pack "$WORK/model.fqpack" --out "$OUT" --steps 0,2,4,6,8,10,5,0 \
      --hold 5 --margin 1 --eval-text "$EVAL" --chunks 60
    ;;
  generated)
    "$FQ" synth -o "$WORK/gen-F16.gguf" --embd 1024 --layers 12 --ff 4096 --heads 16 --kv-heads 4 \
      --vocab 32000 --type F16 --ctx 512 >/dev/null
    fq import "$WORK/gen-F16.gguf" --model gen --label F16 >/dev/null
    fq quantize --types Q8_0,Q4_K,Q2_K --embed-bits 0 >/dev/null
    fq search --up Q8_0 --mid Q4_K --low Q2_K --calib "$CALIB" -c 64 --tokens 128 -q
    fq pack --codec raw --ensemble Q8_0-Q4_K-Q2_K -o "$WORK/model.fqpack" >/dev/null
    "$RUN" --fqpack "$FQ" --pack "$WORK/model.fqpack" --out "$OUT" \
      --steps 0,40,80,120,160,200,100,0 --hold 5 --margin 16
    ;;
  *) echo "usage: $0 [BUILD] real|generated" >&2; exit 2 ;;
esac
