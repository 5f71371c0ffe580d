#!/usr/bin/env bash
# The main job (`make demo`): the whole FlexQuant pipeline on one model.
#   1. import a float checkpoint into a fresh store
#   2. quantize it to a ladder of QMs (int8/int4/int3/int2, groups of 64)
#   3. search the EQM ensemble between int8 and int2
#   4. gc --prune 0.5: drop the half of the mid modules the ensemble uses
#      least, repair the ensemble, free the bytes
#   5. pack it into one .fqpack, verify it
#   6. generate with a memory budget that changes while it runs, printing
#      every transition
#   7. report perplexity versus footprint (a table and demo-out/report.svg)
#   8. serve the pack over HTTP: one chat request, a budget squeezed through
#      POST /v1/budget, the metrics before and after, SIGTERM
# Every command is printed before it runs, so the demo doubles as a
# walk-through of the CLI.
#
#   make demo                        # stories260K from the test data when it
#                                    # is there, else a synthetic llama
#   make demo MODEL=model-f32.gguf   # your own F32/F16 checkpoint
set -euo pipefail
FQPACK=${1:-build/cli/fqpack}
OUT=${DEMO_OUT:-demo-out}
DATA=${FQ_TESTDATA:-../shared/data}
rm -rf "$OUT"
mkdir -p "$OUT"
STORE="$OUT/store"

run() {
  echo "+ $*" >&2
  "$@"
}
fq() { run "$FQPACK" --store "$STORE" "$@"; }

CALIB=$DATA/text/tinystories.txt
EVAL=$DATA/text/tinystories_val.txt
PROMPT="Once upon a time"
if [ -n "${MODEL:-}" ]; then
  FILE=$MODEL
  echo "demo input: $FILE"
elif [ -f "$DATA/models/stories260K/stories260K-F32.gguf" ]; then
  FILE=$DATA/models/stories260K/stories260K-F32.gguf
  echo "demo input: $FILE (a 260K-parameter llama trained on TinyStories)"
else
  echo "demo input: no MODEL and no test data, so fqpack writes a small synthetic llama (random weights)"
  FILE=$OUT/demo-F32.gguf
  run "$FQPACK" synth --name demo --type F32 -o "$FILE"
fi
if [ ! -f "$CALIB" ]; then
  # Any text tokenizes; this file is at hand.
  CALIB=README.md
  EVAL=README.md
  PROMPT="The store"
fi

fq init
fq import "$FILE"
fq quantize --bits 8,4,3,2 --group 64
fq ls
fq search --up int8-g64 --mid int4-g64,int3-g64 --low int2-g64 --calib "$CALIB" --tokens "${TOKENS:-1024}"
fq gc --prune 0.5
fq ls --ensembles
fq verify
fq pack -o "$OUT/model.fqpack"
run "$FQPACK" info "$OUT/model.fqpack"
run "$FQPACK" verify "$OUT/model.fqpack"

# A budget that falls in three steps and comes back, around the smallest
# EQM's need (which `run` reports when a budget is below it).
need=$("$FQPACK" run "$OUT/model.fqpack" --budget 1 --prompt x -n 1 2>&1 | sed -n 's/.*needs at least \([0-9]*\) bytes.*/\1/p' | head -1 || true)
need=${need:-1000000}
{
  echo "token_index,budget"
  echo "0,$((need * 3))"
  echo "30,$((need * 14 / 10))"
  echo "60,$((need * 12 / 10))"
  echo "90,$((need * 101 / 100))"
  echo "120,$((need * 3))"
} > "$OUT/budget-trace.csv"
echo "budget trace ($OUT/budget-trace.csv):"
cat "$OUT/budget-trace.csv"
run "$FQPACK" run "$OUT/model.fqpack" --budget-trace "$OUT/budget-trace.csv" --prompt "$PROMPT" -n 150 --temp 0 \
  --transitions-json "$OUT/transitions.json"
echo
fq report --eval-text "$EVAL" --chunks "${CHUNKS:-32}" --every "${EVERY:-6}" --plot "$OUT/report.svg"

# The pack as an OpenAI-compatible server, on a free port (--port 0; the
# port is in the "listening on" line).
"$FQPACK" serve "$OUT/model.fqpack" --port 0 --chat-template chatml 2> "$OUT/serve.log" &
SERVER=$!
echo "+ $FQPACK serve $OUT/model.fqpack --port 0 --chat-template chatml 2> $OUT/serve.log &" >&2
URL=""
for _ in $(seq 100); do
  URL=$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$OUT/serve.log")
  [ -n "$URL" ] && curl -sf "$URL/health" > /dev/null && break
  sleep 0.1
done
[ -n "$URL" ] || { cat "$OUT/serve.log"; kill "$SERVER"; exit 1; }
run curl -s "$URL/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 40, "temperature": 0}'
echo
echo "metrics before:"
curl -s "$URL/metrics" | grep -E '^fqpack_(budget_bytes|eqm_step|weights_resident_bytes|transitions_total|bytes_swapped_total)'
run curl -s "$URL/v1/budget" -d "{\"bytes\": $((need * 101 / 100))}"
echo
echo "metrics after:"
curl -s "$URL/metrics" | grep -E '^fqpack_(budget_bytes|eqm_step|weights_resident_bytes|transitions_total|bytes_swapped_total|tokens_generated_total)'
kill -TERM "$SERVER"
wait "$SERVER"
echo "server log ($OUT/serve.log):"
cat "$OUT/serve.log"
echo "demo done: store $STORE, pack $OUT/model.fqpack, transitions $OUT/transitions.json, plot $OUT/report.svg"
