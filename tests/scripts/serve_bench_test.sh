#!/usr/bin/env bash
# The serving benchmark's load generator (benchmarks/serve_bench.py) against a real
# eexit-server with the embedded model, each dataset once: every request must complete,
# stream exactly max_tokens tokens (ignore_eos), and give TTFT/ITL figures; the summary
# table must read the results back; a server that is not there must fail the run.
#   tests/scripts/serve_bench_test.sh [path/to/eexit-server]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
server=${1:-$root/build/release/samples/server/eexit-server}
python=${EEXIT_PYTHON:-python3}
tmp=$(mktemp -d)
pid=""
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
"$server" --port 0 --threads 1 >"$tmp/server.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
  grep -q "listening on" "$tmp/server.log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/server.log" >&2; exit 1; }
  sleep 0.1
done
port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/server.log")
[ -n "$port" ] || { cat "$tmp/server.log" >&2; exit 1; }
bench() { "$python" "$root/benchmarks/serve_bench.py" --url "http://127.0.0.1:$port" \
  --json "$tmp/out.jsonl" --max-tokens 8 "$@"; }
bench --dataset plain --num-requests 6 --max-concurrency 3 --prompt-chars 60 --label a
bench --dataset shared-prefix --num-requests 4 --request-rate 50 --prefix-chars 200 \
  --question-chars 40 --label b
bench --dataset chat --num-requests 6 --turns 3 --turn-chars 30 --max-concurrency 2 --label c
"$python" - "$tmp/out.jsonl" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
assert [r["dataset"] for r in runs] == ["plain", "shared-prefix", "chat"], runs
for r in runs:
    n = r["num_requests"]
    assert r["completed"] == n and r["failed"] == 0, r
    assert r["output_tokens"] == n * 8, r  # ignore_eos: exactly max_tokens each
    assert r["ttft_p50_ms"] > 0 and r["itl_p50_ms"] >= 0 and r["e2e_p99_ms"] >= r["ttft_p99_ms"], r
    assert r["mean_prompt_tokens"] and r["mean_prompt_tokens"] > 10, r  # usage came back
print("serve_bench_test: 3 runs, every request complete")
PY
# To a file, then grep: `| grep -q` exits at its first match and the summary's next line
# then meets a closed pipe (BrokenPipeError, and pipefail fails the test).
"$python" "$root/benchmarks/serve_bench.py" --summarize "$tmp/out.jsonl" --baseline a >"$tmp/summary.txt"
grep -q "^plain  *3 a " "$tmp/summary.txt"
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=""
if bench --dataset plain --num-requests 2 --label gone >"$tmp/gone.txt" 2>&1; then
  echo "serve_bench_test: a run against a stopped server passed" >&2
  exit 1
fi
grep -q "failed" "$tmp/gone.txt"
echo "serve_bench_test: passed"
