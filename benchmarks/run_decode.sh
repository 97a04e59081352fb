#!/bin/sh
# usage: benchmarks/run_decode.sh [BENCH_BINARY [MODEL_DIR]] [-- extra bench options]
# Generates the random-weight model (dim 768, 12 layers, 12 heads, hidden 2048, vocab
# 32000, f32, seed 0) when MODEL_DIR has none, then runs eexit-bench-decode on 2 threads.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${1:-$root/build-bench/benchmarks/eexit-bench-decode}
model=${2:-$(dirname "$bench")/random-768}
[ $# -ge 2 ] && shift 2 || shift $#
[ "${1:-}" = "--" ] && shift
python=${EEXIT_PYTHON:-/usr/bin/python3}
if [ ! -f "$model/config.json" ]; then
  "$python" "$root/tools/make_random_model.py" "$model" --dim 768 --layers 12 --heads 12 \
    --kv-heads 12 --hidden 2048 --vocab 32000 --seed 0
fi
# Every weight precision side by side (EEXIT_DTYPES= to skip them).
exec "$bench" "$model" --threads 2 --prompt 128 --new 64 --batches 1,4,16 \
  --dtypes "${EEXIT_DTYPES-bf16,f16,q8_0,q4_0}" "$@"
