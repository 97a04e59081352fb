#!/bin/sh
# usage: benchmarks/run_ee.sh [BENCH_BINARY] [-- extra eexit-bench-ee options, e.g. --quick]
# Runs the early-exit evaluation on the embedded model (models/eexit-shakespeare) over the
# held-out tail of tinyshakespeare, writes benchmarks/results/ee_eval.csv and draws
# benchmarks/results/ee_tradeoff.png (python3-matplotlib). --quick writes *_quick.* instead.
# One engine thread: the 2 cores are shared with other jobs, and a fork-join pool of 2
# stalls at every op whenever one of its threads is descheduled (see RESULTS.md).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/build-eval/benchmarks/eexit-bench-ee
case "${1:-}" in ""|-*) ;; *) bench=$1; shift ;; esac
[ "${1:-}" = "--" ] && shift
python=${EEXIT_PYTHON:-/usr/bin/python3}
data=${EEXIT_DATA:-$root/../shared/data/tinyshakespeare.txt}
out=$root/benchmarks/results
mkdir -p "$out"
name=ee_eval
for a in "$@"; do [ "$a" = "--quick" ] && name=ee_eval_quick; done
cd "$root"
"$bench" models/eexit-shakespeare --data "$data" --threads 1 --csv "$out/$name.csv" "$@" \
  | tee "$out/$name.txt"
"$python" "$root/benchmarks/plot_ee.py" "$out/$name.csv" "$out/${name%_eval*}_tradeoff${name#ee_eval}.png"
