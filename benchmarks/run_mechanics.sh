#!/bin/sh
# usage: benchmarks/run_mechanics.sh [BENCH_BINARY [MODEL_DIR]] [-- extra bench options]
# Generates the random-weight 110M-shape model (dim 768, 12 layers, 12 heads, hidden 2048,
# vocab 32000, f32, seed 0) when MODEL_DIR has none, then runs eexit-bench-mechanics on one
# thread (the machine's 2 cores are shared) and writes benchmarks/results/mechanics.csv.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${1:-$root/build/release/benchmarks/eexit-bench-mechanics}
model=${2:-$(dirname "$bench")/random-768}
[ $# -ge 2 ] && shift 2 || shift $#
[ "${1:-}" = "--" ] && shift
python=${EEXIT_PYTHON:-/usr/bin/python3}
if [ ! -f "$model/config.json" ]; then
  "$python" "$root/tools/make_random_model.py" "$model" --dim 768 --layers 12 --heads 12 \
    --kv-heads 12 --hidden 2048 --vocab 32000 --seed 0
fi
mkdir -p "$root/benchmarks/results"
"$bench" "$model" --threads 1 --batches 1,16 --csv "$root/benchmarks/results/mechanics.csv" "$@" \
  | tee "$root/benchmarks/results/mechanics.txt"
