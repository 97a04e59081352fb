#!/usr/bin/env bash
# Scale-out, tried (docs/DEPLOY.md): two eexit-server replicas on loopback ports behind
# HAProxy with deploy/haproxy.cfg (session affinity on X-Session-Id, health checks on
# /ready), streaming load through it (tests/scripts/replica_load.py), one replica SIGKILLed
# mid-run. Passes when no request hangs, each session stays on one replica, and every
# request after the kill is served by the survivor; prints the counts. Then SIGTERM
# drains the survivor: HAProxy must see it not ready while it still answers /health.
#   tests/scripts/replica_test.sh [path/to/eexit-server]   (or EEXIT_SERVER=...)
# Needs haproxy (apt-get install haproxy; scripts/install-deps.sh --tests) and python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
server=${1:-${EEXIT_SERVER:-$root/build/release/samples/server/eexit-server}}
[ -x "$server" ] || { echo "replica_test: no eexit-server at $server" >&2; exit 2; }
command -v haproxy >/dev/null || { echo "replica_test: haproxy not found (apt-get install haproxy)" >&2; exit 2; }
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# A replica on a free port (--port 0): its pid, then its port once it listens.
start_replica() {  # start_replica NAME
  "$server" --port 0 --threads 1 --shutdown-timeout 10 >"$tmp/$1.log" 2>&1 &
  pids+=($!)
  eval "$1_pid=$!"
  for _ in $(seq 600); do
    if grep -q "listening on" "$tmp/$1.log"; then
      eval "$1_port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/$1.log")"
      return
    fi
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "replica_test: $1 did not start:" >&2
  cat "$tmp/$1.log" >&2
  exit 1
}
start_replica r1
start_replica r2
lb_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "replica_test: r1 on :$r1_port (pid $r1_pid), r2 on :$r2_port (pid $r2_pid), haproxy on :$lb_port"

# The command docs/DEPLOY.md shows, in the foreground of a background job (-db: no daemon).
EEXIT_LB_BIND=127.0.0.1:$lb_port EEXIT_REPLICA_1=127.0.0.1:$r1_port \
  EEXIT_REPLICA_2=127.0.0.1:$r2_port haproxy -db -f "$root/deploy/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pids+=($!)
ok=0
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$lb_port/ready" >/dev/null && { ok=1; break; }
  sleep 0.1
done
[ "$ok" = 1 ] || { echo "replica_test: haproxy did not come up:" >&2; cat "$tmp/haproxy.log" >&2; exit 1; }
sleep 1.5  # both replicas pass their checks (rise 2, inter 500 ms)

status=0
python3 "$root/tests/scripts/replica_load.py" --port "$lb_port" --kill "r1=$r1_pid" \
  --lb-log "$tmp/haproxy.log" || status=1
grep -o 'Server replicas/r[0-9] is [A-Z]*.*' "$tmp/haproxy.log" | sed 's/^/replica_test: haproxy: /' || true

# Graceful drain of the survivor: streams run; SIGTERM; they finish with [DONE] and it
# exits 0. The probes right after the signal see the drain only while a stream still runs
# (the small model finishes fast): an answer must be /health 200 and /ready 503; no answer
# (000) means the drain was over and the listener closed.
streams=()
for i in $(seq 8); do
  curl -sN "http://127.0.0.1:$r2_port/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model":"eexit-shakespeare","prompt":"ROMEO:\n","max_tokens":480,"ignore_eos":true,"stream":true}' \
    >"$tmp/stream$i.txt" &
  streams+=($!)
done
for i in $(seq 8); do
  for _ in $(seq 100); do [ -s "$tmp/stream$i.txt" ] && break; sleep 0.05; done
done
kill -TERM "$r2_pid"
health=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$r2_port/health" || true)
ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$r2_port/ready" || true)
echo "replica_test: draining r2: /health $health, /ready $ready"
if [ "$health$ready" != 000000 ] && { [ "$health" != 200 ] || [ "$ready" != 503 ]; }; then
  echo "replica_test: FAIL: a draining replica must answer /health 200 and /ready 503" >&2
  status=1
fi
for p in "${streams[@]}"; do wait "$p" || true; done
rc=0
wait "$r2_pid" || rc=$?
done_streams=0
for i in $(seq 8); do tail -c 100 "$tmp/stream$i.txt" | grep -q 'data: \[DONE\]' && done_streams=$((done_streams + 1)); done
echo "replica_test: r2 exited $rc after the drain; $done_streams/8 streams ended with [DONE]"
{ [ "$rc" = 0 ] && [ "$done_streams" = 8 ]; } || status=1
[ "$status" = 0 ] && echo "replica_test: PASS" || echo "replica_test: FAIL"
exit "$status"
