#!/usr/bin/env bash
# fqpack against llama.cpp on the same GGUF files, on this machine, the two
# alternating file by file and round by round (the host's memory bandwidth
# moves between minutes; only runs close in time compare).
#
#   bench/side_by_side.sh BUILD [WORKDIR]
#
# BUILD is a Release build with benches (make bench). WORKDIR (default
# /tmp/fqpack-side-by-side) keeps the model files between runs:
#   1. a generated model of TinyLlama-1.1B's shape per type (fqpack synth
#      --type T: 22 layers, n_embd 2048, n_ff 5632, GQA 32/4, vocab 32000;
#      the same random weights, every matrix put through T's reference
#      quantizer, llama.cpp's);
#   2. llama.cpp through node-llama-cpp (bench/llama_cpp/package.json pins
#      it; npm installs it into bench/llama_cpp/node_modules on first use;
#      Debian's nodejs and npm are installed if missing);
#   3. per round and type: decode_bench's Prompt128 and Decode on the file
#      (FQ_BENCH_GGUF), then bench/llama_cpp/speed.mjs on the same file.
# Prints a table of tokens/s and the ratios, and keeps the raw results in
# WORKDIR/results.jsonl.
#
# Environment: FQ_SBS_TYPES (default Q8_0,Q6_K,Q5_K,Q4_K,Q4_0,Q3_K,Q2_K,IQ4_NL),
# FQ_SBS_THREADS (default 2), FQ_SBS_ROUNDS (default 3).
set -euo pipefail
build=${1:?usage: bench/side_by_side.sh BUILD [WORKDIR]}
work=${2:-/tmp/fqpack-side-by-side}
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$build" && pwd)
types=${FQ_SBS_TYPES:-Q8_0,Q6_K,Q5_K,Q4_K,Q4_0,Q3_K,Q2_K,IQ4_NL}
threads=${FQ_SBS_THREADS:-2}
rounds=${FQ_SBS_ROUNDS:-3}
fqpack=$build/cli/fqpack
bench=$build/bench/decode_bench
[ -x "$fqpack" ] && [ -x "$bench" ] || { echo "side_by_side: $build has no fqpack or decode_bench (make bench)" >&2; exit 1; }
mkdir -p "$work"

# 1. The model files.
IFS=, read -ra type_list <<<"$types"
for t in "${type_list[@]}"; do
  [ -f "$work/tinyllama-$t.gguf" ] ||
    "$fqpack" synth -o "$work/tinyllama-$t.gguf" --type "$t" --name tinyllama --embd 2048 \
      --layers 22 --ff 5632 --heads 32 --kv-heads 4 --vocab 32000 --ctx 2048 --seed 7
done

# 2. llama.cpp.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi
[ -d "$here/llama_cpp/node_modules/node-llama-cpp" ] ||
  (cd "$here/llama_cpp" && npm install --no-audit --no-fund --silent)

# 3. Alternating measurements.
results=$work/results.jsonl
: >"$results"
for round in $(seq 1 "$rounds"); do
  for t in "${type_list[@]}"; do
    file=$work/tinyllama-$t.gguf
    echo "round $round/$rounds: $t" >&2
    FQ_BENCH_GGUF=$file FQ_BENCH_SHAPES=none FQ_BENCH_MATVEC_TYPES=none FQ_BENCH_TIERS=avx512 \
      FQ_BENCH_THREADS=$threads FQ_BENCH_SLEEPING_POOL=0 \
      "$bench" --benchmark_filter="^(Prompt128|Decode)/tinyllama-$t.gguf/" \
      --benchmark_format=json 2>/dev/null |
      python3 -c '
import json, sys
for b in json.load(sys.stdin)["benchmarks"]:
    kind = "prompt" if b["name"].startswith("Prompt128/") else "decode"
    print(json.dumps({"engine": "fqpack", "type": sys.argv[1], "round": int(sys.argv[2]),
                      "kind": kind, "tokens_per_s": b["tokens_per_s"]}))' "$t" "$round" >>"$results"
    (cd "$here/llama_cpp" && node speed.mjs --threads "$threads" "$file") |
      python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    for kind in ("prompt", "decode"):
        print(json.dumps({"engine": "llama.cpp", "type": sys.argv[1], "round": int(sys.argv[2]),
                          "kind": kind, "tokens_per_s": r[kind + "_tokens_per_s"]}))' "$t" "$round" >>"$results"
  done
done

# The table: per type and kind, each round's ratio, and the medians.
python3 - "$results" "$threads" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
types = list(dict.fromkeys(r["type"] for r in rows))
def get(engine, t, kind):
    return {r["round"]: r["tokens_per_s"] for r in rows
            if r["engine"] == engine and r["type"] == t and r["kind"] == kind}
print("TinyLlama-1.1B shape, %s threads, tokens/s (median of rounds) and fqpack / llama.cpp per round:" % sys.argv[2])
print()
print("| type | prompt fqpack | prompt llama.cpp | prompt ratio | decode fqpack | decode llama.cpp | decode ratio |")
print("|---|---|---|---|---|---|---|")
for t in types:
    cells = [t]
    for kind in ("prompt", "decode"):
        f, l = get("fqpack", t, kind), get("llama.cpp", t, kind)
        ratios = [f[k] / l[k] for k in sorted(f) if k in l]
        cells += ["%.1f" % statistics.median(f.values()) if f else "-",
                  "%.1f" % statistics.median(l.values()) if l else "-",
                  ", ".join("%.2f" % x for x in ratios) +
                  (" (%.2fx)" % statistics.median(ratios) if ratios else "")]
    print("| " + " | ".join(cells) + " |")
PY
