#!/usr/bin/env bash
# Serving benchmark, eexit-server vs llama.cpp's llama-server on the SAME GGUF file, in one
# run (issue 20, item 2). benchmarks/serve_bench.py is the load generator (its own process,
# streaming OpenAI /v1/completions; its header says what it measures).
#
# usage: benchmarks/run_serve_bench.sh MODEL.gguf [options]
#   --llama-server BIN   llama.cpp's llama-server (or env LLAMA_SERVER); without it only
#                        eexit runs (with and without its prefix cache where it has one)
#   --eexit-build DIR    our build (default build/release): samples/server/eexit-server
#   --cache-only         leave out the eexit --no-prefix-cache server (its rows are the
#                        prefix cache's own comparison; slow on shared-prefix sets)
#   --also LABEL=BIN     another eexit-server binary beside it, e.g. a build of an earlier
#                        commit for a before/after run (repeatable; prefix cache on)
#   --variant LABEL=ARGS our server again with extra arguments, e.g.
#                        eexit-f16='--kv-dtype f16' (repeatable; prefix cache on)
#   --out DIR            results (default DIR/serve-bench/results-<time> of --eexit-build)
#   --concurrency LIST   default 1,8,32 (the servers get max(LIST) slots / running sequences)
#   --datasets LIST      default plain,shared-prefix,chat
#   --requests N         requests per run: max(N, 4 x concurrency) (default 32)
#   --max-tokens N       tokens generated per request (default 64; ignore_eos)
#   --reps N             interleaved repetitions (default 2); the servers take turns in
#                        each configuration, their order rotating per rep
#   --threads N          server threads (default: all cores)
#   --server-cpu LIST --loadgen-cpu LIST   taskset CPU lists (default: none; on 2 cores
#                        there is no core to spare, so both float and the load is noted)
#   --ctx N              context per slot for llama-server (default 2048)
#   env LLAMA_SERVER_ARGS extra llama-server arguments; EEXIT_SERVER_ARGS extra ours
#   env OMP_WAIT_POLICY   passive on a SHARED machine (llama.cpp's OpenMP threads spin at
#                         every barrier and lose 5-10x when another process holds a core;
#                         benchmarks/run_vs_llamacpp.sh measured it); unset on a quiet one
#
# Before every run the script waits until the server it is about to load is idle (ours:
# /metrics shows no running or waiting request; llama-server: /slots, started with --slots,
# shows no slot processing), for up to 10 minutes: a server that goes on computing requests
# its client gave up on (timed out) would otherwise carry that load into the next rows.
#
# A model file: tools/gguf_tool.py random writes a random Llama of the 110M shape with the
# llama SPM vocabulary (see benchmarks/run_vs_llamacpp.sh, step 1), and llama-quantize makes
# a Q8_0 / Q4_K_M file of it; any Llama GGUF both servers load will do. Both servers bind
# 127.0.0.1 only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${EEXIT_PYTHON:-/usr/bin/python3}
die() { echo "run_serve_bench: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

model="" llama_server=${LLAMA_SERVER:-} eexit_build=${EEXIT_BUILD:-$root/build/release} out=""
conc=1,8,32 datasets=plain,shared-prefix,chat requests=32 max_tokens=64 reps=2 threads=""
server_cpu="" loadgen_cpu="" ctx=2048 also=() variants=() cache_only=0
while [ $# -gt 0 ]; do
  case $1 in
    --llama-server) llama_server=$2; shift 2 ;;
    --eexit-build) eexit_build=$2; shift 2 ;;
    --also) also+=("$2"); shift 2 ;;
    --variant) variants+=("$2"); shift 2 ;;
    --cache-only) cache_only=1; shift ;;
    --out) out=$2; shift 2 ;;
    --concurrency) conc=$2; shift 2 ;;
    --datasets) datasets=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --server-cpu) server_cpu=$2; shift 2 ;;
    --loadgen-cpu) loadgen_cpu=$2; shift 2 ;;
    --ctx) ctx=$2; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "unknown option $1" >&2; usage 1 ;;
    *) model=$1; shift ;;
  esac
done
[ -n "$model" ] && [ -f "$model" ] || die "give a GGUF model file (--help says how to make one)"
ours=$eexit_build/samples/server/eexit-server
[ -x "$ours" ] || die "$ours is missing: cmake --build --preset release --target eexit-server"
[ -z "$llama_server" ] || [ -x "$llama_server" ] || die "$llama_server is not an executable"
threads=${threads:-$(nproc)}
max_c=$(echo "$conc" | tr ',' '\n' | sort -n | tail -1)
out=${out:-$eexit_build/serve-bench/results-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
pin() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {  # NAME URL LOG PID
  for _ in $(seq 1 600); do
    if "$python" - "$2" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1] + "/health", timeout=2).status == 200 else 1)
EOF
    kill -0 "$4" 2>/dev/null || die "$1 exited at start: see $3"
    sleep 0.5
  done
  die "$1 did not become healthy in 300 s: see $3"
}

# wait_idle LABEL URL: until the server has nothing running or queued (see the header)
wait_idle() {
  "$python" - "$1" "$2" <<'EOF' >&2
import json, sys, time, urllib.request
label, url = sys.argv[1], sys.argv[2]
def busy():
    if label == "llama-server":
        slots = json.load(urllib.request.urlopen(url + "/slots", timeout=5))
        return sum(1 for s in slots if s.get("is_processing"))
    n = 0
    for line in urllib.request.urlopen(url + "/metrics", timeout=5).read().decode().splitlines():
        if line.startswith(("eexit_requests_running ", "eexit_requests_waiting ")):
            n += int(float(line.split()[1]))
    return n
t0 = time.time()
while True:
    try:
        n = busy()
    except Exception as e:  # no such endpoint: nothing to wait on
        print(f"  ({label}: cannot tell whether it is idle: {e})")
        break
    if n == 0:
        break
    if time.time() - t0 > 600:
        print(f"  ({label}: still busy with {n} after 600 s; running anyway)")
        break
    time.sleep(0.5)
if time.time() - t0 > 1:
    print(f"  ({label}: waited {time.time() - t0:.0f} s for it to finish earlier requests)")
EOF
}

# ---- the servers (all started first; an idle one waits on its socket) -----------------
labels=() urls=()
start_ours() {  # LABEL [extra args]; env BIN: the binary (default ours)
  local label=$1; shift
  local port; port=$(free_port)
  # kv blocks: every slot may hold ctx tokens
  $(pin "$server_cpu") "${BIN:-$ours}" --model "$model" --host 127.0.0.1 --port "$port" \
    --served-model-name bench --threads "$threads" --max-running "$max_c" \
    --kv-blocks $(((max_c * ctx + 15) / 16)) ${EEXIT_SERVER_ARGS:-} "$@" >"$out/$label.log" 2>&1 &
  pids+=($!)
  wait_ready "$label" "http://127.0.0.1:$port" "$out/$label.log" $!
  labels+=("$label") urls+=("http://127.0.0.1:$port")
}
start_ours eexit
if [ "$cache_only" = 0 ] && "$ours" --help 2>&1 | grep -q -- --no-prefix-cache; then
  start_ours eexit-no-prefix-cache --no-prefix-cache
fi
for a in "${also[@]}"; do
  [ -x "${a#*=}" ] || die "--also $a: ${a#*=} is not an executable"
  BIN=${a#*=} start_ours "${a%%=*}"
done
for v in "${variants[@]}"; do
  [[ $v == *=* ]] || die "--variant $v: give LABEL=ARGS"
  # shellcheck disable=SC2086  # ARGS are words on purpose
  start_ours "${v%%=*}" ${v#*=}
done
if [ -n "$llama_server" ]; then
  port=$(free_port)
  # -np slots of ctx tokens each; continuous batching and prompt-cache reuse are its defaults.
  $(pin "$server_cpu") "$llama_server" -m "$model" --host 127.0.0.1 --port "$port" \
    -np "$max_c" -c $((max_c * ctx)) -t "$threads" -tb "$threads" --alias bench --slots \
    ${LLAMA_SERVER_ARGS:-} >"$out/llama-server.log" 2>&1 &
  pids+=($!)
  wait_ready llama-server "http://127.0.0.1:$port" "$out/llama-server.log" $!
  labels+=(llama-server) urls+=("http://127.0.0.1:$port")
fi
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); model $model"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
  echo "eexit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' (modified)')"
  echo "llama-server: ${llama_server:-none} $("${llama_server:-true}" --version 2>&1 | grep -m1 -i version || true)"
  echo "servers: ${labels[*]}; threads $threads; concurrency $conc; datasets $datasets;" \
    "requests >= $requests; max_tokens $max_tokens; reps $reps; server cpu '${server_cpu}', loadgen cpu '${loadgen_cpu}'"
} | tee "$out/meta.txt"

# ---- the runs, interleaved ------------------------------------------------------------
n=${#labels[@]}
for rep in $(seq 1 "$reps"); do
  for ds in ${datasets//,/ }; do
    for c in ${conc//,/ }; do
      nreq=$((requests > 4 * c ? requests : 4 * c))
      for i in $(seq 0 $((n - 1))); do
        j=$(((i + rep - 1) % n))
        echo "rep $rep: ${labels[$j]} $ds concurrency $c ($nreq requests)" >&2
        wait_idle "${labels[$j]}" "${urls[$j]}"
        $(pin "$loadgen_cpu") "$python" "$root/benchmarks/serve_bench.py" --url "${urls[$j]}" \
          --model bench --dataset "$ds" --num-requests "$nreq" --max-concurrency "$c" \
          --max-tokens "$max_tokens" --seed "$rep" --label "${labels[$j]}" \
          --json "$out/serve.jsonl" >>"$out/runs.txt" ||
          echo "  (some requests failed: see $out/runs.txt)" >&2
      done
    done
  done
done
base=eexit
[ -n "$llama_server" ] && base=llama-server
"$python" "$root/benchmarks/serve_bench.py" --summarize "$out/serve.jsonl" --baseline "$base" |
  tee "$out/summary.txt"
echo "results: $out" >&2
