#!/usr/bin/env bash
# The perplexity ladder of `fqpack quantize` on stories260K, next to
# llama.cpp's: imports the F32 checkpoint into a fresh store, makes int8 ..
# int2 (group 64) by RTN and by GPTQ (calibrated on the training-split text,
# never the evaluation text), measures each QM's perplexity on the
# evaluation text as llama.cpp's llama-perplexity does (-c 256), and prints
# a table; then fqpack's own GGUF-type ladder (RTN) beside llama.cpp's files
# (imported for their sizes; their PPL from reference/llama_cpp_ppl.tsv).
#
#   bench/quantize_ladder.sh [FQPACK_BINARY]     (FQ_TESTDATA: the test data)
#
# Environment: THREADS (2), BITS (8,6,5,4,3,2), GROUP (64), GGUF_TYPES
# ("Q8_0 Q6_K Q5_K Q4_K Q3_K Q2_K"), and QUANTIZE_ARGS for extra options
# (say --act-order). About 8 minutes on 2 cores.
set -euo pipefail

FQPACK=${1:-build/cli/fqpack}
DATA=${FQ_TESTDATA:?set FQ_TESTDATA to the test data folder}
THREADS=${THREADS:-2}
BITS=${BITS:-8,6,5,4,3,2}
GROUP=${GROUP:-64}
GGUF_TYPES=${GGUF_TYPES-Q8_0 Q6_K Q5_K Q4_K Q3_K Q2_K}
MODEL=$DATA/models/stories260K/stories260K-F32.gguf
EVAL=$DATA/text/tinystories_val.ppl.txt
CALIB=$DATA/text/tinystories.txt
REF=$DATA/reference/llama_cpp_ppl.tsv

STORE=$(mktemp -d)
trap 'rm -rf "$STORE"' EXIT
fq() { "$FQPACK" --store "$STORE/s" -t "$THREADS" -q "$@"; }

fq import "$MODEL" >/dev/null
start=$(date +%s.%N)
fq quantize --from F32 --bits "$BITS" --group "$GROUP" ${QUANTIZE_ARGS:-} >/dev/null
rtn_done=$(date +%s.%N)
fq quantize --from F32 --bits "$BITS" --group "$GROUP" --method gptq --calib "$CALIB" \
  ${QUANTIZE_ARGS:-} >/dev/null
gptq_done=$(date +%s.%N)

# llama.cpp's own ladder, for its bits per weight and bytes; its
# perplexities come from the reference file.
for f in "$DATA"/models/stories260K/stories260K-{F16,Q6_K,Q5_K_M,Q5_K_S,Q4_K_M,Q4_K_S,Q3_K_M,Q2_K}.gguf; do
  fq import "$f" >/dev/null
done
# fqpack's own GGUF-type ladder (RTN, llama.cpp's fallbacks for rows its
# blocks cannot hold), labelled apart from the imported files.
for t in $GGUF_TYPES; do
  fq quantize --from F32 --types "$t" --label "fq-$t" >/dev/null
done

# label -> bits/weight and bytes, from ls --json.
declare -A BPW BYTES
while IFS=$'\t' read -r label bpw bytes; do
  BPW[$label]=$bpw
  BYTES[$label]=$bytes
done < <(fq --json ls | python3 -c '
import json, sys
for m in json.load(sys.stdin)["models"]:
    for q in m["qms"]:
        print("%s\t%.2f\t%d" % (q["label"], q["bits_per_weight"], q["bytes"]))')

ppl() { fq --json ppl --qm "$1" --text "$EVAL" -c 256 | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["ppl"])'; }

printf "%-5s | %-9s %7s %8s %8s | %-14s %7s %8s %8s\n" bits RTN bits/w bytes PPL GPTQ bits/w bytes PPL
printf "%-5s | %-9s %7s %8s %8s |\n" F32 F32 "${BPW[F32]}" "${BYTES[F32]}" "$(ppl F32)"
IFS=, read -ra widths <<<"$BITS"
for b in "${widths[@]}"; do
  r=int$b-g$GROUP
  g=$r-gptq
  printf "%-5s | %-9s %7s %8s %8s | %-14s %7s %8s %8s\n" "$b" "$r" "${BPW[$r]}" "${BYTES[$r]}" \
    "$(ppl "$r")" "$g" "${BPW[$g]}" "${BYTES[$g]}" "$(ppl "$g")"
done
echo
echo "fqpack's GGUF-type ladder (RTN) next to llama.cpp's (its PPL from reference/llama_cpp_ppl.tsv):"
printf "  %-10s %7s %8s %8s\n" QM bits/w bytes PPL
for t in $GGUF_TYPES; do
  printf "  %-10s %7s %8s %8s\n" "fq-$t" "${BPW[fq-$t]}" "${BYTES[fq-$t]}" "$(ppl "fq-$t")"
done
while IFS=$'\t' read -r model file text ctx p err; do
  [[ $model == stories260K ]] || continue
  label=${file#stories260K-}
  label=${label%.gguf}
  printf "  %-10s %7s %8s %8s\n" "$label" "${BPW[$label]:-}" "${BYTES[$label]:-}" "$p"
done <"$REF"
printf "\nquantize seconds: RTN %.1f, GPTQ (with calibration) %.1f (%s threads)\n" \
  "$(echo "$rtn_done - $start" | bc)" "$(echo "$gptq_done - $rtn_done" | bc)" "$THREADS"
