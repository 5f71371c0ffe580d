#!/usr/bin/env bash
# The main job (`make demo`): a checkpoint ladder into a fresh store, shown
# with `fqpack ls`. Every command is printed before it runs, so the demo
# doubles as a walk-through of the CLI.
#
#   make demo                          # a small synthetic model fqpack makes itself
#   make demo MODEL="a.gguf b.gguf"    # your own checkpoints of one model
set -euo pipefail
FQPACK=${1:-build/cli/fqpack}
OUT=${DEMO_OUT:-demo-out}
rm -rf "$OUT"
mkdir -p "$OUT"
STORE="$OUT/store"

run() {
  echo "+ $*" >&2
  "$@"
}

if [ -n "${MODEL:-}" ]; then
  # shellcheck disable=SC2086
  FILES=($MODEL)
  echo "demo input: ${FILES[*]}"
else
  echo "demo input: no MODEL given, so fqpack writes a small synthetic llama (random weights)"
  run "$FQPACK" synth --name demo --type F32 -o "$OUT/demo-F32.gguf"
  run "$FQPACK" synth --name demo --type F16 -o "$OUT/demo-F16.gguf"
  FILES=("$OUT/demo-F32.gguf" "$OUT/demo-F16.gguf")
fi

run "$FQPACK" --store "$STORE" init
run "$FQPACK" --store "$STORE" import "${FILES[@]}"
run "$FQPACK" --store "$STORE" ls
run "$FQPACK" --store "$STORE" verify
