#!/usr/bin/env python3
"""eexit-serve-bench: a serving benchmark in the usual shape (issue 20, item 2).

A load generator in its own process (pin it with --cpu where there are cores for it) sends
OpenAI-compatible streaming /v1/completions requests to one server, at a request rate
(Poisson arrivals; inf = all at once) and/or under a concurrency limit, and reports request
throughput, output tokens/s, and TTFT, TPOT, ITL and end-to-end latency percentiles
(p50/p90/p99). It speaks only the OpenAI API (plus the widely supported `ignore_eos`, so
every request generates --max-tokens), so the same run works against eexit-server and
llama.cpp's llama-server on the same GGUF file.

Datasets, built from a text file (default ../shared/data/tinyshakespeare.txt), with a
fixed seed so that both servers get the same prompts in the same order:
  plain          every prompt a different slice of the text (no shared prefix)
  shared-prefix  one long system text (--prefix-chars) before each request's own question
  chat           multi-turn conversations: turn t's prompt is a short system line, the
                 transcript of turns 0..t-1 (user and assistant lines both taken from the
                 text, so the prompts do not depend on what the server answered) and turn
                 t's user line. Requests go out turn-major (turn 0 of every conversation,
                 then turn 1, ...), so a conversation's earlier turns are usually done
                 before its next one starts, as in a chat service.
Tokens: each SSE event with text counts as one generated token (both servers stream one
token per event), unless the last event carries OpenAI `usage`, whose completion_tokens
wins. TTFT: send to the first text event. TPOT: (latency - TTFT) / (tokens - 1). ITL: every
gap between text events.

Usage: /usr/bin/python3 benchmarks/serve_bench.py --url http://127.0.0.1:8000 --model NAME
          [--dataset plain|shared-prefix|chat] [--num-requests 64] [--request-rate inf]
          [--max-concurrency 8] [--max-tokens 64] [--json OUT] [--label TEXT] [--cpu 1]
       /usr/bin/python3 benchmarks/serve_bench.py --summarize OUT [--baseline LABEL]
          the table of a run's JSON lines: per dataset, concurrency and label the best
          output tok/s and the median TTFT p50/p99 over repetitions, and each label's
          ratios to the baseline's (benchmarks/run_serve_bench.sh runs it).
Exit status: 0 when every request completed; 1 when one failed (the report says why).
"""
import argparse
import http.client
import json
import math
import os
import random
import socket
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--summarize", default="", help="print the table of this JSON-lines file")
    ap.add_argument("--baseline", default="", help="--summarize: the label ratios are taken against")
    ap.add_argument("--model", default="", help="the model id to send (\"model\" field)")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--dataset", choices=["plain", "shared-prefix", "chat"], default="plain")
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "tinyshakespeare.txt"))
    ap.add_argument("--num-requests", type=int, default=64)
    ap.add_argument("--request-rate", type=float, default=math.inf, help="requests/s, Poisson (inf: all at once)")
    ap.add_argument("--max-concurrency", type=int, default=0, help="requests in flight at most (0: no limit)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-chars", type=int, default=400, help="plain: characters per prompt")
    ap.add_argument("--prefix-chars", type=int, default=4000, help="shared-prefix: system text length")
    ap.add_argument("--question-chars", type=int, default=200, help="shared-prefix: each request's own text")
    ap.add_argument("--turns", type=int, default=4, help="chat: turns per conversation")
    ap.add_argument("--turn-chars", type=int, default=300, help="chat: characters per user or assistant turn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=300, help="seconds without a byte before a request fails")
    ap.add_argument("--warmup", type=int, default=1, help="requests sent (and not counted) before the run")
    ap.add_argument("--cpu", default="", help="CPU list for this process (os.sched_setaffinity), e.g. 1 or 2-3")
    ap.add_argument("--json", default="", help="append the result as one JSON line to this file")
    ap.add_argument("--label", default="", help="a name for this run in the report (e.g. the server)")
    return ap.parse_args(argv)


# ---- datasets ---------------------------------------------------------------------------


def slices(text, rng, n, chars):
    """n slices of about `chars` characters, each starting at a line start."""
    starts = [i + 1 for i, c in enumerate(text) if c == "\n" and i + 1 + chars < len(text)]
    return [text[s:s + chars] for s in (rng.choice(starts) for _ in range(n))]


def build_prompts(a, text):
    rng = random.Random(a.seed)
    n = a.num_requests
    if a.dataset == "plain":
        return slices(text, rng, n, a.prompt_chars)
    if a.dataset == "shared-prefix":
        system = "You are a scholar of the plays. Here is the text under discussion:\n\n"
        system += slices(text, rng, 1, a.prefix_chars)[0]
        return [system + "\n\nQuestion: what follows this?\n" + q
                for q in slices(text, rng, n, a.question_chars)]
    # chat: ceil(n / turns) conversations, sent turn-major
    convs = max(1, math.ceil(n / a.turns))
    system = "A conversation between a student and a scholar of the plays.\n\n"
    lines = [slices(text, rng, 2 * a.turns, a.turn_chars) for _ in range(convs)]
    prompts = []
    for t in range(a.turns):
        for c in range(convs):
            hist = "".join(f"User: {lines[c][2 * i]}\nAssistant: {lines[c][2 * i + 1]}\n"
                           for i in range(t))
            prompts.append(system + hist + f"User: {lines[c][2 * t]}\nAssistant:")
    return prompts[:n]


# ---- one streaming request --------------------------------------------------------------


def one_request(a, prompt, out):
    """Sends one streaming completion; fills out with timings or an error."""
    u = urllib.parse.urlsplit(a.url)
    body = {"prompt": prompt, "max_tokens": a.max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    if a.model:
        body["model"] = a.model
    headers = {"Content-Type": "application/json"}
    if a.api_key:
        headers["Authorization"] = "Bearer " + a.api_key
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=a.timeout)
    t0 = time.perf_counter()
    times, usage = [], None
    try:
        conn.request("POST", (u.path.rstrip("/") or "") + "/v1/completions", json.dumps(body), headers)
        res = conn.getresponse()
        if res.status != 200:
            out["error"] = f"HTTP {res.status}: {res.read(300).decode('utf-8', 'replace')}"
            return
        done = False
        while True:
            line = res.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            ev = json.loads(data)
            if "error" in ev:
                out["error"] = "error event: " + json.dumps(ev["error"])[:300]
                return
            if ev.get("usage"):
                usage = ev["usage"]
            ch = ev.get("choices") or []
            if ch and (ch[0].get("text") or ""):
                times.append(time.perf_counter())
        if not done:
            out["error"] = "the stream ended without data: [DONE]"
            return
    except (socket.timeout, TimeoutError):
        out["error"] = f"no byte for {a.timeout} s"
        return
    except (http.client.HTTPException, OSError, ValueError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
        return
    finally:
        conn.close()
    end = time.perf_counter()
    if not times:
        out["error"] = "no token streamed"
        return
    n = len(times)
    if usage and usage.get("completion_tokens"):
        n = int(usage["completion_tokens"])
    out.update(start=t0, end=end, ttft=times[0] - t0, latency=end - t0, tokens=n,
               itl=[b - a_ for a_, b in zip(times, times[1:])],
               prompt_tokens=(usage or {}).get("prompt_tokens"))


# ---- the run ----------------------------------------------------------------------------


def pct(xs, p):
    """The p-th percentile (linear interpolation, as numpy's default)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    f = math.floor(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def run(a, prompts):
    rng = random.Random(a.seed + 1)
    results = [dict() for _ in prompts]
    sem = threading.Semaphore(a.max_concurrency) if a.max_concurrency > 0 else None
    threads = []

    def go(i):
        try:
            one_request(a, prompts[i], results[i])
        finally:
            if sem:
                sem.release()

    t_start = time.perf_counter()
    next_t = t_start
    for i in range(len(prompts)):
        if math.isfinite(a.request_rate):
            next_t += rng.expovariate(a.request_rate)
            delay = next_t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        if sem:
            sem.acquire()
        th = threading.Thread(target=go, args=(i,), daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    duration = time.perf_counter() - t_start
    return results, duration


def summarize(a, results, duration):
    ok = [r for r in results if "error" not in r]
    failed = [r for r in results if "error" in r]
    toks = sum(r["tokens"] for r in ok)
    ttft = [r["ttft"] for r in ok]
    tpot = [(r["latency"] - r["ttft"]) / (r["tokens"] - 1) for r in ok if r["tokens"] > 1]
    itl = [x for r in ok for x in r["itl"]]
    lat = [r["latency"] for r in ok]
    ptoks = [r["prompt_tokens"] for r in ok if r.get("prompt_tokens")]
    s = {
        "label": a.label, "url": a.url, "dataset": a.dataset, "num_requests": len(results),
        "request_rate": a.request_rate if math.isfinite(a.request_rate) else "inf",
        "max_concurrency": a.max_concurrency, "max_tokens": a.max_tokens,
        "completed": len(ok), "failed": len(failed), "duration_s": duration,
        "request_throughput": len(ok) / duration, "output_tok_s": toks / duration,
        "output_tokens": toks, "mean_prompt_tokens": (sum(ptoks) / len(ptoks)) if ptoks else None,
        "load_before": a.load_before, "load_after": os.getloadavg()[0],
        "errors": sorted({r["error"] for r in failed})[:5],
    }
    for name, xs in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2e", lat)):
        s[f"{name}_mean_ms"] = 1e3 * sum(xs) / len(xs) if xs else float("nan")
        for p in (50, 90, 99):
            s[f"{name}_p{p}_ms"] = 1e3 * pct(xs, p)
    return s


def report(s):
    print(f"== {s['label'] or s['url']}: dataset {s['dataset']}, {s['num_requests']} requests, "
          f"rate {s['request_rate']}, concurrency {s['max_concurrency'] or 'unlimited'}, "
          f"max_tokens {s['max_tokens']}"
          + (f", prompt ~{s['mean_prompt_tokens']:.0f} tokens" if s["mean_prompt_tokens"] else ""))
    print(f"   completed {s['completed']}, failed {s['failed']}, {s['duration_s']:.1f} s, "
          f"{s['request_throughput']:.2f} req/s, {s['output_tok_s']:.1f} output tok/s "
          f"(load {s['load_before']:.2f} -> {s['load_after']:.2f})")
    print("              mean      p50      p90      p99   (ms)")
    for name in ("ttft", "tpot", "itl", "e2e"):
        print(f"   {name.upper():5s} " + " ".join(f"{s[f'{name}_{k}_ms']:8.1f}"
                                              for k in ("mean", "p50", "p90", "p99")))
    for e in s["errors"]:
        print("   error:", e)


def summarize_file(path, baseline):
    """Best output tok/s and median TTFT p50/p99 per (dataset, concurrency, label)."""
    groups = {}
    with open(path) as f:
        for line in f:
            s = json.loads(line)
            groups.setdefault((s["dataset"], s["max_concurrency"], s["label"]), []).append(s)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    rows = {}
    for key, runs in groups.items():
        rows[key] = {"tok_s": max(r["output_tok_s"] for r in runs),
                     "ttft50": med([r["ttft_p50_ms"] for r in runs]),
                     "ttft99": med([r["ttft_p99_ms"] for r in runs]),
                     "tpot50": med([r["tpot_p50_ms"] for r in runs]),
                     "itl99": med([r["itl_p99_ms"] for r in runs]),
                     "failed": sum(r["failed"] for r in runs), "reps": len(runs),
                     "load": max(r["load_before"] for r in runs)}
    print(f"{'dataset':14s} {'conc':>4s} {'label':18s} {'tok/s':>8s} {'TTFT50':>8s} "
          f"{'TTFT99':>8s} {'TPOT50':>7s} {'ITL99':>7s} {'fail':>4s} {'load':>5s}"
          + (f" {'x tok/s':>8s} {'TTFT99 x':>8s}" if baseline else ""))
    for (ds, c, label) in sorted(rows):
        r = rows[(ds, c, label)]
        b = rows.get((ds, c, baseline)) if baseline else None
        extra = ""
        if b:
            extra = f" {r['tok_s'] / b['tok_s']:8.2f} {r['ttft99'] / b['ttft99']:8.2f}"
        print(f"{ds:14s} {c:4d} {label:18s} {r['tok_s']:8.1f} {r['ttft50']:8.1f} "
              f"{r['ttft99']:8.1f} {r['tpot50']:7.1f} {r['itl99']:7.1f} {r['failed']:4d} "
              f"{r['load']:5.2f}{extra}")
    return 0


def main(argv=None):
    a = parse_args(argv)
    if a.summarize:
        return summarize_file(a.summarize, a.baseline)
    if not a.url:
        print("serve_bench: --url is required (or --summarize FILE)", file=sys.stderr)
        return 2
    if a.cpu:
        cpus = set()
        for part in a.cpu.split(","):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
        os.sched_setaffinity(0, cpus)
    with open(a.data, encoding="utf-8", errors="replace") as f:
        text = f.read()
    prompts = build_prompts(a, text)
    if a.warmup > 0:  # not counted: first-touch costs, connection set-up
        warm = [dict() for _ in range(a.warmup)]
        for i, w in enumerate(warm):
            one_request(a, "Warm-up " + str(i) + ": " + prompts[0][:64], w)
            if "error" in w:
                print("serve_bench: the warm-up request failed:", w["error"], file=sys.stderr)
                return 1
    a.load_before = os.getloadavg()[0]
    results, duration = run(a, prompts)
    s = summarize(a, results, duration)
    report(s)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(s) + "\n")
    return 0 if s["failed"] == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
