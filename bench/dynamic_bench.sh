#!/usr/bin/env bash
# Dynamic precision per token (arXiv 2506.12024) against the two static QMs
# it switches between, on the ../shared models: decode speed (greedy
# generation of N tokens from a .fqpack, median of R runs) and perplexity on
# the evaluation text (the same chunks for every configuration), for static
# hi, static lo, and --dynamic at three targets between them (a quarter,
# half and three quarters of the way from lo's bits per weight to hi's).
# The dynamic model is calibrated on the calibration text only.
#
#   FQ_TESTDATA=../shared/data bench/dynamic_bench.sh [build-dir] [threads] [runs] [ppl-chunks]
#
# The paper's bar is >= 1.3x the decode speed of static hi at a perplexity
# within 1% of static hi. Prints one table per model.
#
# With SYNTH=1 it also times decode on a generated model too large for the
# caches (random weights, 12 blocks of TinyLlama's width: Q8_0 ~600 MB,
# quantized by `fqpack quantize`), where reading fewer bytes could pay;
# perplexity means nothing there, so it reports speed and bits only. That
# part takes several minutes; SYNTH_PACK=FILE keeps (or reuses) its pack,
# SYNTH_LAYERS sets its blocks (12). MODELS picks the real models
# ("tinystories-3M stories260K"; empty: none).
set -euo pipefail
BUILD=${1:-build}
THREADS=${2:-1}
RUNS=${3:-5}
CHUNKS=${4:-100}
DATA=${FQ_TESTDATA:?set FQ_TESTDATA to the ../shared/data folder}
FQ="$BUILD/cli/fqpack"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fqpack-dynbench-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CALIB="$DATA/text/tinystories.txt"
EVAL="$DATA/text/tinystories_val.ppl.txt"
N_PREDICT=240  # the models' context is 256
PROMPT="Once upon a time"

json() {  # file, python expression over d
  # A random model's text may end in a partial UTF-8 sequence: read leniently.
  python3 -c "import json; d=json.loads(open('$1', 'rb').read().decode('utf-8', 'replace')); print($2)"
}

# Decode tokens/s of several configurations of one pack: RUNS rounds, each
# running every configuration once in turn (so a load that drifts during the
# benchmark touches all of them alike); prints the median of each, one line
# per configuration, and leaves each configuration's last JSON in
# $WORK/run.<i>.json.
decode_all() {  # pack, ctx, then one quoted argument string per configuration
  local pack=$1 ctx=$2; shift 2
  local n=$# i r
  for ((i = 0; i < n; ++i)); do : > "$WORK/rates.$i"; done
  for ((r = 0; r < RUNS; ++r)); do
    i=0
    for cfg in "$@"; do
      # shellcheck disable=SC2086
      "$FQ" -q -t "$THREADS" --json run "$pack" $cfg -p "$PROMPT" -n $N_PREDICT --temp 0 -c "$ctx" > "$WORK/run.$i.json"
      json "$WORK/run.$i.json" "d['generated_tokens'] / d['generate_seconds']" >> "$WORK/rates.$i"
      i=$((i + 1))
    done
  done
  for ((i = 0; i < n; ++i)); do
    sort -g "$WORK/rates.$i" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
  done
}

bench_model() {  # name, dir, hi, lo, ctx
  local name=$1 dir=$2 hi=$3 lo=$4 ctx=$5
  local store="$WORK/$name-store" pack="$WORK/$name.fqpack"
  "$FQ" -q --store "$store" init > /dev/null
  "$FQ" -q --store "$store" import --model "$name" "$DATA/models/$dir/$dir-$hi.gguf" "$DATA/models/$dir/$dir-$lo.gguf" > /dev/null
  "$FQ" -q -t "$THREADS" --store "$store" --json calibrate-dynamic --hi "$hi" --lo "$lo" --calib "$CALIB" -c "$ctx" \
    > "$WORK/calib.json"
  local hib lob
  hib=$(json "$WORK/calib.json" "d['hi_bits']")
  lob=$(json "$WORK/calib.json" "d['lo_bits']")
  "$FQ" -q --store "$store" pack --codec raw -o "$pack" > /dev/null

  echo "== $name: hi=$hi ($(printf %.3f "$hib") bits/w), lo=$lo ($(printf %.3f "$lob") bits/w); decode: $N_PREDICT tokens," \
       "median of $RUNS, $THREADS thread(s); ppl: $CHUNKS chunks of $ctx tokens of $(basename "$EVAL")"
  printf "%-22s %10s %11s %8s %10s %9s %9s\n" config "bits/w" "decode t/s" "x hi" ppl "ppl vs hi" "hi share"
  local hi_rate="" hi_ppl=""
  row() {  # label, bits, rate, ppl, share
    [[ -z $hi_rate ]] && hi_rate=$3 && hi_ppl=$4
    printf "%-22s %10.3f %11.0f %7.2fx %10.4f %+8.2f%% %9s\n" "$1" "$2" "$3" \
      "$(python3 -c "print($3/$hi_rate)")" "$4" "$(python3 -c "print(100*($4/$hi_ppl-1))")" "$5"
  }
  local targets=() configs=("--qm $hi" "--qm $lo") f
  for f in 0.75 0.5 0.25; do
    targets+=("$(python3 -c "print(f'{$lob + $f * ($hib - $lob):.4f}')")")
    configs+=("--dynamic hi=$hi,lo=$lo --target-bits ${targets[-1]}")
  done
  local rates
  mapfile -t rates < <(decode_all "$pack" "$ctx" "${configs[@]}")
  local i ppl bits share
  for i in 0 1; do
    local q=$([[ $i == 0 ]] && echo "$hi" || echo "$lo")
    "$FQ" -q -t "$THREADS" --json ppl "$pack" --qm "$q" --text "$EVAL" -c "$ctx" --chunks "$CHUNKS" > "$WORK/ppl.json"
    ppl=$(json "$WORK/ppl.json" "d['ppl']")
    bits=$([[ $i == 0 ]] && echo "$hib" || echo "$lob")
    row "static $q" "$bits" "${rates[$i]}" "$ppl" "-"
  done
  for i in 0 1 2; do
    # shellcheck disable=SC2086
    "$FQ" -q -t "$THREADS" --json ppl "$pack" ${configs[$((i + 2))]} --text "$EVAL" -c "$ctx" --chunks "$CHUNKS" \
      > "$WORK/ppl.json"
    ppl=$(json "$WORK/ppl.json" "d['ppl']")
    bits=$(json "$WORK/ppl.json" "d['dynamic']['mean_bits']")
    share=$(json "$WORK/ppl.json" "'%.0f%%' % (100 * d['dynamic']['mean_hi_share'])")
    row "dynamic ${targets[$i]}" "$bits" "${rates[$((i + 2))]}" "$ppl" "$share"
  done
  echo "   (dynamic resident weights at the lowest target: $(json "$WORK/run.4.json" "'%d KiB = lo %d KiB + hi copies %d KiB' % (d['dynamic']['resident_bytes'] // 1024, d['dynamic']['lo_bytes'] // 1024, d['dynamic']['hi_copy_bytes'] // 1024)"))"
}

for model in ${MODELS-tinystories-3M stories260K}; do
  case $model in
    tinystories-3M) bench_model tinystories-3M tinystories-3M Q8_0 Q4_K_M 256 ;;
    stories260K) bench_model stories260K stories260K F16 Q4_K_M 256 ;;
  esac
done

if [[ ${SYNTH:-0} == 1 ]]; then
  store="$WORK/synth-store" pack=${SYNTH_PACK:-"$WORK/synth.fqpack"}
  [[ -f $pack ]] || {
    "$FQ" -q synth -o "$WORK/synth.gguf" --embd 2048 --layers "${SYNTH_LAYERS:-12}" --ff 5632 --heads 16 --kv-heads 4 --vocab 512 \
      --ctx 256 --type F16 > /dev/null
    "$FQ" -q --store "$store" init > /dev/null
    "$FQ" -q --store "$store" import --model synth --label F16 "$WORK/synth.gguf" > /dev/null
    rm "$WORK/synth.gguf"
    "$FQ" -q -t "$THREADS" --store "$store" quantize --types Q8_0,Q4_K --embed-bits 0 > /dev/null
    "$FQ" -q -t "$THREADS" --store "$store" calibrate-dynamic --hi Q8_0 --lo Q4_K --calib "$CALIB" -c 64 --tokens 128 \
      > /dev/null
    "$FQ" -q --store "$store" pack --qm Q8_0 --qm Q4_K --codec raw -o "$pack" > /dev/null
  }
  N_PREDICT=64
  echo "== synthetic ${SYNTH_LAYERS:-12} x 2048 (random weights): decode $N_PREDICT tokens, median of $RUNS, $THREADS thread(s)"
  printf "%-22s %10s %11s %8s\n" config "bits/w" "decode t/s" "x hi"
  configs=("--qm Q8_0" "--qm Q4_K")
  for target in 7.5 6.5 5.5; do configs+=("--dynamic hi=Q8_0,lo=Q4_K --target-bits $target"); done
  mapfile -t rates < <(decode_all "$pack" 256 "${configs[@]}")
  for i in "${!configs[@]}"; do
    if ((i < 2)); then
      label="static ${configs[$i]#--qm }" bits=$(json "$WORK/run.$i.json" "'-'")
    else
      label="dynamic ${configs[$i]##* }" bits=$(json "$WORK/run.$i.json" "'%.3f' % d['dynamic']['mean_bits']")
    fi
    printf "%-22s %10s %11.1f %7.2fx\n" "$label" "$bits" "${rates[$i]}" "$(python3 -c "print(${rates[$i]}/${rates[0]})")"
  done
fi
