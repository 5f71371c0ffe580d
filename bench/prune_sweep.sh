#!/usr/bin/env bash
# FlexQuant on both real models' full 6-rung ladders: what the search costs
# against the number of rungs (with and without its exact speed-ups, in the
# same run), then gc --prune at several P with a storage and perplexity table
# and a plot per ranking.
#   stories260K:     F32 -> fqpack quantize int8/6/5/4/3/2 (g64, RTN),
#                    ensemble int8 > int6 > int5 > int4 > int3 > int2
#   tinystories-3M:  llama.cpp's Q8_0 > Q6_K > Q5_K_M > Q4_K_M > Q3_K_M > Q2_K
# Each P copies the searched store, prunes (the repair is a new search with
# the ensemble's own parameters) and reports on tinystories_val.txt.
#
#   bench/prune_sweep.sh [BUILD_DIR] [OUT_DIR]     (FQ_TESTDATA: the test data)
#
# Environment: TOKENS (calibration tokens of the searches, 4096), CTX (tokens
# per calibration chunk, the model's), CHUNKS (evaluation chunks of 256
# tokens, 64), EVERY (evaluate every k-th EQM, 4), PS (0,0.25,0.5,0.6,0.75,0.9),
# RANKS ("area uses"), MODELS ("stories260K tinystories-3M"), SCALING (1: also
# time the search at 3, 4 and 6 rungs, with and without --no-speedups),
# THREADS (2), PRUNE (0: the scaling part only). Hours at the defaults on 2 busy cores; TOKENS=1024 is the
# cheap setting.
set -euo pipefail

BUILD=${1:-build}
OUT=${2:-prune-sweep}
DATA=${FQ_TESTDATA:?set FQ_TESTDATA to the test data folder}
FQPACK=$BUILD/cli/fqpack
SWEEP=$BUILD/bench/prune_sweep_bench
TOKENS=${TOKENS:-4096}
CHUNKS=${CHUNKS:-64}
EVERY=${EVERY:-4}
PS=${PS:-0,0.25,0.5,0.6,0.75,0.9}
THREADS=${THREADS:-2}
CALIB=$DATA/text/tinystories.txt
EVAL=$DATA/text/tinystories_val.txt
CTX_ARG=${CTX:+-c $CTX}
mkdir -p "$OUT"

for model in ${MODELS:-stories260K tinystories-3M}; do
  lib=$OUT/$model.library
  rm -rf "$lib"
  fq() { "$FQPACK" --store "$1" -q -t "$THREADS" "${@:2}"; }
  case $model in
    stories260K)
      fq "$lib" import "$DATA/models/stories260K/stories260K-F32.gguf" >/dev/null
      fq "$lib" quantize --from F32 --bits 8,6,5,4,3,2 --group 64 >/dev/null
      up=int8-g64 low=int2-g64
      mids6=int6-g64,int5-g64,int4-g64,int3-g64 mids4=int5-g64,int3-g64 mids3=int4-g64
      ;;
    tinystories-3M)
      for l in Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K; do
        fq "$lib" import "$DATA/models/tinystories-3M/tinystories-3M-$l.gguf" >/dev/null
      done
      up=Q8_0 low=Q2_K
      mids6=Q6_K,Q5_K_M,Q4_K_M,Q3_K_M mids4=Q5_K_M,Q3_K_M mids3=Q4_K_M
      ;;
  esac
  if [[ ${SCALING:-1} == 1 ]]; then
    echo "== $model: search cost against rungs ($TOKENS tokens, $THREADS threads)"
    printf '%-6s %-10s %6s %8s %8s %8s %8s %8s\n' rungs speedups EQMs evals units rejected "sens s" "search s"
    for mids in "$mids3" "$mids4" "$mids6"; do
      rungs=$(($(tr ',' '\n' <<<"$mids" | wc -l) + 2))
      for flag in --no-speedups ""; do
        s=$OUT/$model.scaling
        rm -rf "$s"
        cp -r "$lib" "$s"
        fq "$s" --json search --up $up --low $low --mid "$mids" --calib "$CALIB" \
          --tokens "$TOKENS" $CTX_ARG $flag >"$s.json"
        python3 - "$s.json" "$rungs" "${flag:-on}" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print('%-6s %-10s %6d %8d %8d %8d %8.1f %8.1f  area %.9g' % (
    sys.argv[2], 'off' if sys.argv[3] == '--no-speedups' else 'on', d['eqms'],
    d['search_evaluations'], d['search_units'], d['rejected_early'],
    d['sensitivity_seconds'], d['search_seconds'], d['area']))
PY
      done
    done
    rm -rf "$OUT/$model.scaling" "$OUT/$model.scaling.json"
  fi
  [[ ${PRUNE:-1} == 1 ]] || continue
  store=$OUT/$model.store
  rm -rf "$store"
  cp -r "$lib" "$store"
  fq "$store" search --up $up --low $low --mid "$mids6" --calib "$CALIB" --tokens "$TOKENS" \
    $CTX_ARG >/dev/null
  for rank in ${RANKS:-area uses}; do
    echo "== $model, $rank ranking"
    "$SWEEP" "$store" "$EVAL" "$OUT/$model-$rank" "$PS" "$CHUNKS" "$EVERY" "$rank"
  done
done
