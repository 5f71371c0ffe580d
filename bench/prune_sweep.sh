#!/usr/bin/env bash
# gc --prune at P = 0, 0.25, 0.5, 0.75 on both real models: storage and
# perplexity at the static footprints, and a plot with one curve per P.
#   stories260K:     F32 -> fqpack quantize int8/int4/int3/int2 (g64, RTN),
#                    ensemble int8 > int4 > int3 > int2
#   tinystories-3M:  llama.cpp's Q8_0 > Q4_K_M > Q2_K
# Each P copies the searched store, prunes (the repair is a new search with
# the ensemble's own parameters) and reports on tinystories_val.txt.
#
#   bench/prune_sweep.sh [BUILD_DIR] [OUT_DIR]     (FQ_TESTDATA: the test data)
#
# Environment: TOKENS (calibration tokens of the searches, 4096), CHUNKS
# (evaluation chunks of 256 tokens, 64), EVERY (evaluate every k-th EQM, 4),
# MODELS ("stories260K tinystories-3M"). About 25 minutes on 2 cores.
set -euo pipefail

BUILD=${1:-build}
OUT=${2:-prune-sweep}
DATA=${FQ_TESTDATA:?set FQ_TESTDATA to the test data folder}
FQPACK=$BUILD/cli/fqpack
SWEEP=$BUILD/bench/prune_sweep_bench
TOKENS=${TOKENS:-4096}
CHUNKS=${CHUNKS:-64}
EVERY=${EVERY:-4}
CALIB=$DATA/text/tinystories.txt
EVAL=$DATA/text/tinystories_val.txt
mkdir -p "$OUT"

for model in ${MODELS:-stories260K tinystories-3M}; do
  store=$OUT/$model.store
  rm -rf "$store"
  fq() { "$FQPACK" --store "$store" -q "$@"; }
  case $model in
    stories260K)
      fq import "$DATA/models/stories260K/stories260K-F32.gguf" >/dev/null
      fq quantize --from F32 --bits 8,4,3,2 --group 64 >/dev/null
      fq search --up int8-g64 --low int2-g64 --mid int4-g64,int3-g64 --calib "$CALIB" --tokens "$TOKENS" >/dev/null
      ;;
    tinystories-3M)
      for l in Q8_0 Q4_K_M Q2_K; do fq import "$DATA/models/tinystories-3M/tinystories-3M-$l.gguf" >/dev/null; done
      fq search --up Q8_0 --low Q2_K --mid Q4_K_M --calib "$CALIB" --tokens "$TOKENS" >/dev/null
      ;;
  esac
  echo "== $model"
  "$SWEEP" "$store" "$EVAL" "$OUT/$model" 0,0.25,0.5,0.75 "$CHUNKS" "$EVERY"
done
