#!/usr/bin/env bash
# Runs decode_bench (built beforehand; this script builds nothing) and prints
# its results as markdown tables: per model shape and weight type, prompt
# (128-token batch) and decode tokens per second at 1 and all threads, decode's
# weight bytes per second as a percentage of the read bandwidth measured in the
# same run (its best pass, and passes made between the decode's tokens), the ratio of the widest kernel tier to the AVX2 tier, and that of
# a pool whose workers spin between matmuls to one whose workers sleep; then
# the matmul core alone per type (MatVec: 256 MiB of weights streamed from
# memory, against the read bandwidth and against a plain read of the same
# matrices in the same shares, timed alternately; DotInCache: one thread, weights in L2, per CPU second).
#
# Usage: bench/speed_table.sh [build-dir] [extra decode_bench flags...]
# FQ_SPEED_JSON=<file>: keep decode_bench's JSON there; when the file exists,
# print the tables from it without running anything.
# The FQ_BENCH_* variables of bench/decode_bench.cc pass through, e.g.
#   FQ_BENCH_LAYERS=4 FQ_BENCH_SHAPES=tinyllama bench/speed_table.sh build
set -euo pipefail

build=${1:-build}
shift || true
bin="$build/bench/decode_bench"
if [[ ! -x "$bin" ]]; then
  echo "speed_table.sh: $bin not found; build the decode_bench target first" >&2
  exit 1
fi
# FQ_SPEED_JSON=<file> keeps the raw results; an existing file is only
# rendered (no run), so a table can be re-made from an earlier run.
if [[ -n "${FQ_SPEED_JSON:-}" ]]; then
  json=$FQ_SPEED_JSON
else
  json=$(mktemp)
  trap 'rm -f "$json"' EXIT
fi
if [[ -z "${FQ_SPEED_JSON:-}" || ! -s "$json" ]]; then
  "$bin" --benchmark_out="$json" --benchmark_out_format=json "$@" >&2
fi

python3 - "$json" <<'EOF'
import json, re, sys

runs = json.load(open(sys.argv[1]))["benchmarks"]
# name -> counters, the "/min_time:..." and "/real_time" parts dropped
by = {}
for b in runs:
    if b.get("run_type", "iteration") != "iteration" or "error_occurred" in b:
        continue
    by[re.sub(r"/min_time:[0-9.]+", "", re.sub(r"/real_time$", "", b["name"]))] = b

def get(name, key):
    b = by.get(name)
    return None if b is None else b.get(key)

def fmt(v, spec="{:.1f}"):
    return "-" if v is None else spec.format(v)

threads = sorted({int(m.group(1)) for n in by for m in [re.search(r"threads:(\d+)$", n)] if m})
tiers = ["avx2", "avx512"]
top = "avx512" if any("/avx512/" in n for n in by) else "avx2"
tmax = threads[-1] if threads else 1

def best_read(t):
    # The best pass of the run: decode_bench re-measures after each benchmark.
    vals = [get("ReadBW/threads:%d" % t, "best_GBps") or 0]
    vals += [b.get("read_GBps", 0) for n, b in by.items() if n.endswith("/threads:%d" % t)]
    return max(vals)

print("Read bandwidth, best pass of the run (every thread sums its slice of 1 GiB with 512-bit loads):",
      ", ".join("%d thread%s %.1f GB/s" % (t, "s" if t > 1 else "", best_read(t)) for t in threads),
      "; memcpy %.1f GB/s (reads and writes each byte)." % ((get("ReadBW/threads:%d" % tmax, "memcpy_GBps") or 0)))
print()

models = []
for n in by:
    m = re.match(r"Decode/([^/]+)/([^/]+)/" + top + r"/threads:\d+$", n)
    if m and (m.group(1), m.group(2)) not in models:
        models.append((m.group(1), m.group(2)))

def ratio(kind, model, typ, t):
    key = "tokens_per_s"
    a = get("%s/%s/%s/%s/threads:%d" % (kind, model, typ, top, t), key)
    b = get("%s/%s/%s/avx2/threads:%d" % (kind, model, typ, t), key)
    return None if a is None or b is None or b == 0 else a / b

if models:
    hdr = ["shape", "type"]
    hdr += ["prompt tok/s %dt" % t for t in threads]
    hdr += ["decode tok/s %dt" % t for t in threads]
    hdr += ["decode %% of read BW %dt" % t for t in threads]
    hdr += ["decode %% of read BW between its tokens %dt" % t for t in threads]
    hdr += ["%s/AVX2 prompt %dt" % (top.upper(), tmax), "%s/AVX2 decode %dt" % (top.upper(), tmax)]
    if tmax > 1:
        hdr += ["decode spinning/sleeping pool %dt" % tmax]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for model, typ in models:
        row = [model, typ]
        row += [fmt(get("Prompt128/%s/%s/%s/threads:%d" % (model, typ, top, t), "tokens_per_s")) for t in threads]
        row += [fmt(get("Decode/%s/%s/%s/threads:%d" % (model, typ, top, t), "tokens_per_s")) for t in threads]
        row += [fmt(None if get("Decode/%s/%s/%s/threads:%d" % (model, typ, top, t), "of_read") is None
                    else 100 * get("Decode/%s/%s/%s/threads:%d" % (model, typ, top, t), "of_read"), "{:.0f}%")
                for t in threads]
        row += [fmt(None if get("Decode/%s/%s/%s/threads:%d" % (model, typ, top, t), "of_read_now") is None
                    else 100 * get("Decode/%s/%s/%s/threads:%d" % (model, typ, top, t), "of_read_now"), "{:.0f}%")
                for t in threads]
        row += [fmt(ratio("Prompt128", model, typ, tmax), "{:.2f}x"), fmt(ratio("Decode", model, typ, tmax), "{:.2f}x")]
        if tmax > 1:
            spin = get("Decode/%s/%s/%s/threads:%d" % (model, typ, top, tmax), "tokens_per_s")
            sleep = get("Decode/%s/%s/%s/sleeping-pool/threads:%d" % (model, typ, top, tmax), "tokens_per_s")
            row += [fmt(None if spin is None or not sleep else spin / sleep, "{:.2f}x")]
        print("| " + " | ".join(row) + " |")
    print()

mv = []
for n in by:
    m = re.match(r"MatVec/([^/]+)/" + top + r"/threads:\d+$", n)
    if m and m.group(1) not in mv:
        mv.append(m.group(1))
if mv:
    hdr = ["type"] + ["matvec GB/s %dt" % t for t in threads] + ["%% of read BW %dt" % t for t in threads]
    hdr += ["%% of plain read %dt" % t for t in threads]
    hdr += ["%s/AVX2 %dt" % (top.upper(), t) for t in threads]
    hdr += ["in-cache kernel GB/s AVX2, %s" % top.upper()]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for typ in mv:
        row = [typ]
        gb = [get("MatVec/%s/%s/threads:%d" % (typ, top, t), "weight_GBps") for t in threads]
        rd = [get("MatVec/%s/%s/threads:%d" % (typ, top, t), "read_GBps") for t in threads]
        base = [get("MatVec/%s/avx2/threads:%d" % (typ, t), "weight_GBps") for t in threads]
        row += [fmt(g) for g in gb]
        row += [fmt(None if g is None or r is None else 100 * g / r, "{:.0f}%") for g, r in zip(gb, rd)]
        row += [fmt(None if get("MatVec/%s/%s/threads:%d" % (typ, top, t), "of_plain_read") is None
                    else 100 * get("MatVec/%s/%s/threads:%d" % (typ, top, t), "of_plain_read"), "{:.0f}%")
                for t in threads]
        row += [fmt(None if g is None or b is None else g / b, "{:.2f}x") for g, b in zip(gb, base)]
        row += [fmt(get("DotInCache/%s/avx2" % typ, "weight_GBps")) + ", " +
                fmt(get("DotInCache/%s/%s" % (typ, top), "weight_GBps"))]
        print("| " + " | ".join(row) + " |")
EOF
