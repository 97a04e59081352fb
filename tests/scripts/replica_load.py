#!/usr/bin/env python3
"""Streaming load through a load balancer, with one replica SIGKILLed mid-run.

Workers send streaming /v1/completions and /v1/chat/completions, each with its own
X-Session-Id. Once --kill-after requests have finished, the replica named --kill
(name=pid) gets SIGKILL; the run goes on until --total requests have finished and
--after-down requests have started since the load balancer marked it DOWN (its log,
--lb-log, says "<name> is DOWN"). Every request ends as one of:
  ok     200 and a stream that ends with data: [DONE] and no error event;
  error  a clean error: an HTTP error status, an error event, or a connection the load
         balancer closed before [DONE] (the client sees it end);
  hung   no byte for --timeout seconds.
Checks: nothing hung; each session stayed on one replica in the requests that ended before
the kill (one in flight at the kill may be retried elsewhere by the load balancer); nothing was
served by the killed replica after the kill; every request that started once the load
balancer had marked it DOWN was served in full by a survivor. Between the kill and that
mark, a request may get a clean error (e.g. a 502 for one sent as the replica died). The replica comes from the X-Eexit-Replica header
that deploy/haproxy.cfg adds. Exit status 0 when the checks pass.
"""
import argparse
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--kill", required=True, help="name=pid of the replica to kill")
ap.add_argument("--workers", type=int, default=8)
ap.add_argument("--kill-after", type=int, default=40)
ap.add_argument("--total", type=int, default=120)
ap.add_argument("--max-tokens", type=int, default=64)
ap.add_argument("--timeout", type=float, default=60)
ap.add_argument("--lb-log", required=True, help="the load balancer's log (stderr)")
ap.add_argument("--after-down", type=int, default=40)
args = ap.parse_args()
kill_name, kill_pid = args.kill.split("=")

lock = threading.Lock()
results = []  # dicts: session, replica, verdict, detail, after_kill
killed_at = None  # perf_counter time of the kill
down = False  # the load balancer has marked the killed replica DOWN


def watch_log():
    global down
    while True:
        with open(args.lb_log, errors="replace") as f:
            if f"{kill_name} is DOWN" in f.read():
                with lock:
                    down = True
                return
        time.sleep(0.05)


def one(session, i):
    chat = i % 2 == 1
    body = {"model": "eexit-shakespeare", "stream": True, "max_tokens": args.max_tokens,
            "ignore_eos": True, "temperature": 0}
    if chat:
        body["messages"] = [{"role": "user", "content": "JULIET:"}]
    else:
        body["prompt"] = "ROMEO:\n"
    path = "/v1/chat/completions" if chat else "/v1/completions"
    with lock:
        r = {"session": session, "replica": None, "after_kill": killed_at is not None,
             "after_down": down}
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=args.timeout)
    try:
        conn.request("POST", path, json.dumps(body),
                     {"Content-Type": "application/json", "X-Session-Id": session})
        res = conn.getresponse()
        r["replica"] = res.getheader("X-Eexit-Replica")
        data = res.read().decode("utf-8", "replace")
        if res.status != 200:
            r["verdict"], r["detail"] = "error", f"HTTP {res.status}"
        elif '"error"' in data:
            r["verdict"], r["detail"] = "error", "error event"
        elif data.rstrip().endswith("data: [DONE]"):
            r["verdict"], r["detail"] = "ok", ""
        else:
            r["verdict"], r["detail"] = "error", "stream ended without [DONE]"
    except (socket.timeout, TimeoutError):
        r["verdict"], r["detail"] = "hung", f"no byte for {args.timeout} s"
    except (http.client.HTTPException, ConnectionError, OSError) as e:
        r["verdict"], r["detail"] = "error", f"connection: {type(e).__name__}"
    finally:
        conn.close()
    return r


def worker(w):
    global killed_at
    session = f"conversation-{w}"
    i = 0
    while True:
        with lock:
            after_down = sum(1 for r in results if r["after_down"])
            if len(results) >= args.total and after_down >= args.after_down:
                return
            if killed_at is not None and time.perf_counter() - killed_at > 120:
                return  # the load balancer never marked it DOWN: the checks below say so
        r = one(session, i)
        i += 1
        with lock:
            r["ended_before_kill"] = killed_at is None
            results.append(r)
            if killed_at is None and len(results) >= args.kill_after:
                os.kill(int(kill_pid), signal.SIGKILL)
                killed_at = time.perf_counter()
                threading.Thread(target=watch_log, daemon=True).start()
                print(f"replica_load: SIGKILL {kill_name} (pid {kill_pid}) after "
                      f"{len(results)} requests", flush=True)


threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.workers)]
for t in threads:
    t.start()
for t in threads:
    t.join()

count = lambda pred: sum(1 for r in results if pred(r))
replicas = sorted({r["replica"] for r in results if r["replica"]})
print(f"replica_load: {len(results)} requests: ok {count(lambda r: r['verdict'] == 'ok')}, "
      f"clean errors {count(lambda r: r['verdict'] == 'error')}, "
      f"hung {count(lambda r: r['verdict'] == 'hung')}")
phases = (("before the kill", lambda r: not r["after_kill"]),
          ("after the kill, before DOWN", lambda r: r["after_kill"] and not r["after_down"]),
          ("after DOWN", lambda r: r["after_down"]))
for phase, in_phase in phases:
    rs = [r for r in results if in_phase(r)]
    per = ", ".join(f"{n} {sum(1 for r in rs if r['replica'] == n)}" for n in replicas)
    errors = {}
    for r in rs:
        if r["verdict"] != "ok":
            errors[r["detail"]] = errors.get(r["detail"], 0) + 1
    errs = "".join(f", {n} x {d}" for d, n in sorted(errors.items()))
    print(f"replica_load: {phase} (by start): {len(rs)} requests, "
          f"ok {sum(1 for r in rs if r['verdict'] == 'ok')}{errs}; served by {per}")

failures = []
if count(lambda r: r["verdict"] == "hung"):
    failures.append("some requests hung")
homes = {}
for r in results:
    if r["ended_before_kill"] and r["replica"]:
        homes.setdefault(r["session"], set()).add(r["replica"])
moved = sorted(s for s, h in homes.items() if len(h) > 1)
if moved:
    failures.append(f"sessions served by more than one replica before the kill: {moved}")
if len(homes) < args.workers:
    failures.append(f"{args.workers - len(homes)} sessions ended no request before the kill")
if kill_name not in {n for h in homes.values() for n in h}:
    failures.append(f"{kill_name} served nothing before the kill: the kill tested nothing")
if any(r["after_kill"] and r["replica"] == kill_name for r in results):
    failures.append(f"{kill_name} served a request that started after it was killed")
late = [r for r in results if r["after_down"]]
if len(late) < args.after_down:
    failures.append(f"{len(late)} requests after {kill_name} was marked DOWN, not {args.after_down}")
if any(r["verdict"] != "ok" for r in late):
    failures.append(f"a request after {kill_name} was marked DOWN was not served in full")
for f in failures:
    print(f"replica_load: FAIL: {f}")
sys.exit(1 if failures else 0)
