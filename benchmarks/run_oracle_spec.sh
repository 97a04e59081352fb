#!/bin/sh
# usage: benchmarks/run_oracle_spec.sh [--quick] [-- extra eexit-bench-spec options]
# Issue 17's oracle-acceptance mechanics of self-speculation at the scale users run, on
# random-weight models made by tools/make_random_model.py (in $EEXIT_BENCH_MODELS, default
# build/release/benchmarks/models; made once, ~2.5 GB for the 1B shape):
#   l32-1b  --preset llama-3.2-1b --exit-layers 3,7  (Llama 3.2 1B: dim 2048, 16 layers,
#           32/8 heads, hidden 8192, vocab 128256, tied, bf16; exits after 4 and 8 layers)
#   r110m   the 110M shape of run_decode.sh (f32) with --exit-layers 3,7
# Runs (each eexit-bench-spec --oracle-accept, 2 threads, results in benchmarks/results/
# oracle_*.csv / .txt; the draft vocabulary is 8192 ids, 0..8191: with an oracle only its
# size matters, as the draft head's cost): see the run lines below.
# --quick: a smoke run (seconds per configuration, not for figures).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${EEXIT_BENCH:-$root/build/release/benchmarks/eexit-bench-spec}
models=${EEXIT_BENCH_MODELS:-$root/build/release/benchmarks/models}
python=${EEXIT_PYTHON:-/usr/bin/python3}
out=$root/benchmarks/results
quick=0
[ "${1:-}" = "--quick" ] && { quick=1; shift; }
[ "${1:-}" = "--" ] && shift
mkdir -p "$models" "$out"
[ -f "$models/l32-1b/config.json" ] ||
  "$python" "$root/tools/make_random_model.py" "$models/l32-1b" --preset llama-3.2-1b \
    --exit-layers 3,7 --max-seq-len 2048
[ -f "$models/r110m/config.json" ] ||
  "$python" "$root/tools/make_random_model.py" "$models/r110m" --exit-layers 3,7
common="--threads 2 --prompt-len 32 --k 4"
# every configuration interleaved step by step with a full-depth run of its own, costs measured
# just before it (eexit-bench-spec --interleave): the figures to quote are the "paired" medians
full="$common --interleave"
if [ "$quick" = 1 ]; then
  "$bench" "$models/l32-1b" $common --oracle-accept 0.8 --draft-layers 3 --batches 1 \
    --waves 1 --new 12 --reps 1 --cost-reps 1 --draft-vocab 8192 --k-modes fixed "$@"
  exit 0
fi
run() {  # name, then options
  name=$1
  shift
  echo "== $name: $*" >&2
  "$bench" "$@" --csv "$out/$name.csv" | tee "$out/$name.txt"
}
# 1B bf16, draft vocabulary 8192: every A at B 1 and 4 with E = 4 (k fixed, without the
# bonus row, adaptive), at B 1 with E = 8 (fixed, without bonus); B 16 with the modes meant
# for it. Step costs in wall time (run it on a quiet machine).
run oracle_1b_bf16 "$models/l32-1b" $full --oracle-accept 0.6,0.7,0.8,0.9 --draft-layers 3 \
  --k-modes fixed,fixed-nb,adaptive --batches 1,4 --waves 3 --new 48 --reps 3 --cost-reps 5 --cost-clock wall \
  --draft-vocab 8192 "$@"
run oracle_1b_bf16_e8 "$models/l32-1b" $full --oracle-accept 0.6,0.7,0.8,0.9 --draft-layers 7 \
  --k-modes fixed,fixed-nb --batches 1 --waves 3 --new 48 --reps 3 --cost-reps 5 --cost-clock wall \
  --draft-vocab 8192 "$@"
run oracle_1b_bf16_b16 "$models/l32-1b" $full --oracle-accept 0.6,0.7,0.8,0.9 --draft-layers 3 \
  --k-modes adaptive,fixed-nb --batches 16 --waves 2 --new 48 --reps 3 --cost-reps 3 --cost-clock wall \
  --draft-vocab 8192 "$@"
# The draft vocabulary's effect: the same at A 0.8 with the full 128k head.
run oracle_1b_bf16_fullvocab "$models/l32-1b" $full --oracle-accept 0.8 --draft-layers 3 \
  --k-modes fixed,fixed-nb --batches 1 --waves 3 --new 48 --reps 3 --cost-reps 5 --cost-clock wall "$@"
run oracle_1b_f32 "$models/l32-1b" $full --dtype f32 --oracle-accept 0.8 --draft-layers 3 \
  --k-modes fixed,fixed-nb,adaptive --batches 1,16 --waves 1 --new 32 --reps 3 --cost-reps 4 --cost-clock wall \
  --draft-vocab 8192 "$@"
run oracle_110m "$models/r110m" $full --oracle-accept 0.6,0.7,0.8,0.9 \
  --k-modes fixed,fixed-nb,adaptive --batches 1,4,16 --waves 2 --new 48 --reps 3 --cost-reps 10 --cost-clock wall \
  --draft-vocab 8192 "$@"
"$python" "$root/benchmarks/plot_oracle.py" "$out/oracle_1b_bf16.csv" "$out/oracle_1b_bf16.png" || true
