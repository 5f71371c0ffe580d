#!/usr/bin/env bash
# The tree search against the greedy allocator (`search --method greedy`)
# on the same library, calibration text and sensitivity analysis: both
# ensembles are evaluated on held-out text at every EQM, and compared at the
# static QMs' footprints and at evenly spaced footprints in between, each
# ensemble running its largest EQM that fits (what a runtime does under that
# budget). Builds nothing; makes the libraries:
#   stories260K:        F32 -> fqpack quantize int8/int4/int3/int2 (g64, RTN)
#   tinystories-3M:     llama.cpp's Q8_0 > Q4_K_M > Q2_K
#   tinystories-3M-6:   llama.cpp's Q8_0 > Q6_K > Q5_K_M > Q4_K_M > Q3_K_M > Q2_K
# Writes OUT_DIR/<case>.{json,png} (report --json and --plot --log-ppl;
# bench/results/greedy-vs-tree-<case>.png are copies) and prints one
# markdown table per case. About 25 minutes on 2 shared cores.
#
#   bench/greedy_vs_tree.sh [FQPACK_BINARY] [OUT_DIR]   (FQ_TESTDATA: the test data)
#
# Environment: TOKENS (calibration tokens, 2048), CHUNKS (evaluation chunks
# of 256 tokens, 32), EVERY (evaluate every k-th EQM, 1: the comparison is
# exact only then), GRID (footprints between the static ones, 8), THREADS
# (2), CASES ("stories260K tinystories-3M tinystories-3M-6").
set -euo pipefail

FQPACK=${1:-build/cli/fqpack}
OUT=${2:-greedy-vs-tree}
DATA=${FQ_TESTDATA:?set FQ_TESTDATA to the test data folder}
TOKENS=${TOKENS:-2048}
CHUNKS=${CHUNKS:-32}
EVERY=${EVERY:-1}
GRID=${GRID:-8}
THREADS=${THREADS:-2}
CALIB=$DATA/text/tinystories.txt
EVAL=$DATA/text/tinystories_val.txt
TS=$DATA/models/tinystories-3M/tinystories-3M
mkdir -p "$OUT"

for case in ${CASES:-stories260K tinystories-3M tinystories-3M-6}; do
  store=$OUT/$case.store
  rm -rf "$store"
  fq() { "$FQPACK" --store "$store" -t "$THREADS" -q "$@"; }
  case $case in
    stories260K)
      fq import "$DATA/models/stories260K/stories260K-F32.gguf" >/dev/null
      fq quantize --from F32 --bits 8,4,3,2 --group 64 >/dev/null
      ladder=(--up int8-g64 --mid int4-g64,int3-g64 --low int2-g64)
      ;;
    tinystories-3M)
      for l in Q8_0 Q4_K_M Q2_K; do fq import "$TS-$l.gguf" >/dev/null; done
      ladder=(--up Q8_0 --mid Q4_K_M --low Q2_K)
      ;;
    tinystories-3M-6)
      for l in Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K; do fq import "$TS-$l.gguf" >/dev/null; done
      ladder=(--up Q8_0 --mid Q6_K,Q5_K_M,Q4_K_M,Q3_K_M --low Q2_K)
      ;;
  esac
  for method in tree greedy; do
    start=$(date +%s.%N)
    fq search "${ladder[@]}" --method "$method" --name "$method" --calib "$CALIB" \
      --tokens "$TOKENS" >/dev/null
    printf "%s: %s search %.1f s\n" "$case" "$method" "$(echo "$(date +%s.%N) - $start" | bc)" >&2
  done
  fq report -e tree -e greedy -f "$EVAL" --chunks "$CHUNKS" --every "$EVERY" --json \
    --plot "$OUT/$case.png" --log-ppl >"$OUT/$case.json"

  echo
  echo "### $case ($TOKENS calibration tokens; perplexity on $CHUNKS chunks of tinystories_val.txt, -c 256)"
  echo
  GRID=$GRID python3 - "$OUT/$case.json" <<'EOF'
import json, os, sys
r = json.load(open(sys.argv[1]))
curves = {c["name"]: [e for e in c["eqms"] if "eval_ppl" in e] for c in r["curves"]}
tree, greedy = curves["tree"], curves["greedy"]
def at(eqms, fp):
    fits = [e for e in eqms if e["footprint"] <= fp]
    return max(fits, key=lambda e: e["footprint"]) if fits else None
statics = {s["footprint"]: s for s in r["static"]}
hi, lo = max(statics), min(statics)
grid = int(os.environ["GRID"])
fps = sorted(set(statics) | {round(hi - (hi - lo) * k / (grid + 1)) for k in range(1, grid + 1)},
             reverse=True)
print("| footprint | static QM (PPL) | tree EQM PPL | greedy PPL | difference |")
print("|---|---|---|---|---|")
worse = 0
for fp in fps:
    t, g = at(tree, fp), at(greedy, fp)
    s = statics.get(fp)
    label = "%s (%.4f)" % (s["label"], s["eval_ppl"]) if s else ""
    d = 100 * (t["eval_ppl"] / g["eval_ppl"] - 1)
    worse += d > 0
    print("| %.1f KiB | %s | %.4f | %.4f | %+.2f%% |" % (fp / 1024, label, t["eval_ppl"], g["eval_ppl"], d))
# Over every footprint either ensemble has (a step function each): how
# often and by how much the tree search is above the greedy walk.
all_fps = sorted({e["footprint"] for e in tree} | {e["footprint"] for e in greedy})
diffs = [100 * (at(tree, f)["eval_ppl"] / at(greedy, f)["eval_ppl"] - 1) for f in all_fps]
def mean(eqms, key):
    # The mean over all budgets between QM(n_low) and QM(n_up) of `key` of
    # the largest EQM that fits (a step function).
    pts = sorted(eqms, key=lambda e: e["footprint"])
    a = sum(p[key] * (q["footprint"] - p["footprint"]) for p, q in zip(pts, pts[1:]))
    return a / (pts[-1]["footprint"] - pts[0]["footprint"])
full = {c["name"]: c["eqms"] for c in r["curves"]}
import math
for eqms in (tree, greedy):
    for e in eqms:
        e["eval_nll"] = math.log(e["eval_ppl"])
print()
print("tree above greedy at %d of %d footprints (max %+.2f%%, min %+.2f%%); "
      "mean over budgets: eval PPL tree %.4f, greedy %.4f; eval log PPL tree %.5f, greedy %.5f; "
      "calibration KL (the search's objective) tree %.5f, greedy %.5f; EQMs %d each" % (
          sum(d > 0 for d in diffs), len(diffs), max(diffs), min(diffs), mean(tree, "eval_ppl"),
          mean(greedy, "eval_ppl"), mean(tree, "eval_nll"), mean(greedy, "eval_nll"),
          mean(full["tree"], "calib_kl"), mean(full["greedy"], "calib_kl"), len(full["tree"])))
EOF
done
