#!/usr/bin/env bash
# eexit vs llama.cpp on the CPU, on the SAME GGUF files, in one run (issue 10, item 6).
#
# usage: benchmarks/run_vs_llamacpp.sh [LLAMACPP_BUILD] [options]
#   LLAMACPP_BUILD        a llama.cpp CMake build directory (or env LLAMACPP_BUILD) holding
#                         bin/llama-batched-bench, bin/llama-quantize and bin/llama-simple
#   --eexit-build DIR     our build (default build/release; env EEXIT_BUILD): needs
#                         benchmarks/eexit-bench-decode and samples/generate/eexit-generate
#   --work DIR            where the model files go (default DIR/vs-llamacpp of --eexit-build;
#                         kept between runs: ~0.5 GB per 110M-shape dtype, 4.4 GB for 1B f32)
#   --reps N              interleaved repetitions per configuration (default 3; 1 = quick)
#   --dtypes LIST         default f32,bf16,f16,q8_0,q4_0
#   --batches LIST        decode batch sizes (parallel sequences; default 1,4,16)
#   --prompt N --new N    prompt tokens per sequence (default 128), tokens generated (64)
#   --threads N           default 2
#   --gate-tokens N       greedy tokens compared before timing (default 32)
#   --1b                  also the 1B shape (GQA 32/8; f32,bf16,q8_0,q4_0 at batch 1,16)
#   --skip-110m           only the 1B shape (with --1b)
#   env LLAMACPP_ARGS     extra llama-batched-bench arguments (e.g. "-ctk f32 -ctv f32")
#
# Making a llama.cpp build (outside this repository; nothing of it is committed). From a
# checkout of ggml-org/llama.cpp (measured at upstream commit 3a92bc99d, 2026-05-16):
#   cmake -S llama.cpp -B llama.cpp/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
#         -DGGML_CUDA=OFF -DLLAMA_CURL=OFF
#   cmake --build llama.cpp/build -j 2 --target llama-bench llama-batched-bench \
#         llama-quantize llama-simple
# and ours: cmake --preset release -DEEXIT_ENABLE_CUDA=OFF &&
#   cmake --build --preset release -j 2 --target eexit-bench-decode eexit-generate
#
# What it does:
# 1. Models: tools/gguf_tool.py random writes a random Llama of the 110M shape (dim 768,
#    12 layers, 12/12 heads, hidden 2048) and, with --1b, of a 1B shape (dim 2048, 16
#    layers, 32/8 heads, hidden 5632), vocab 32000 with the llama SPM tokenizer of
#    ../shared/models/tokenizers/ggml-vocab-llama-spm.gguf, F32. llama.cpp's own
#    llama-quantize --pure makes F16, BF16, Q8_0 and Q4_0 from it (--pure: every matrix in
#    that type, no Q6_K output tensor). Both engines read each file as it is (ours keeps the
#    file's precision: --dtype auto).
# 2. Gate: the same prompt text through llama-simple (greedy, llama.cpp's tokenizer) and
#    eexit-generate (greedy, our GGUF tokenizer); the generated text must be equal for
#    --gate-tokens tokens on F32, else the script stops. The other dtypes are reported
#    (their kernels round differently: llama.cpp quantizes activations for Q8_0/Q4_0).
#    Only plain pieces can win (the random output layer gives special and byte tokens a
#    logit of 0), so text comparison is token comparison.
# 3. Timing, per (shape, dtype) and repetition, alternately ours first and theirs first:
#    eexit-bench-decode FILE --no-blas (B sequences of --prompt random ids, prefilled in one
#    step, then --new tokens each; also measures the sgemv bandwidth and sgemm ceilings in
#    the same minute) and llama-batched-bench -npp PROMPT -ntg NEW -npl BATCHES (the same
#    shape of work: B prompts prefilled together, then B tokens per step). Decode tok/s
#    (all sequences) and prefill tok/s (B x PROMPT tokens in one step / its time); the
#    table gives medians over --reps and ours / llama.cpp. 1-minute load average logged
#    at every run (the machine may be shared).
# Raw results: WORK/results-DATE/*.jsonl, summary in WORK/results-DATE/summary.md.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
python=${EEXIT_PYTHON:-/usr/bin/python3}
llama_build=${LLAMACPP_BUILD:-}
eexit_build=${EEXIT_BUILD:-$root/build/release}
work=""
reps=3
dtypes=f32,bf16,f16,q8_0,q4_0
batches=1,4,16
prompt=128
n_new=64
threads=2
gate_tokens=32
with_1b=0
with_110m=1

die() {
  echo "run_vs_llamacpp.sh: $*" >&2
  exit 1
}
usage() {
  sed -n '2,19p' "$0" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --eexit-build) eexit_build=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --dtypes) dtypes=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --prompt) prompt=$2; shift 2 ;;
    --new) n_new=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --gate-tokens) gate_tokens=$2; shift 2 ;;
    --1b) with_1b=1; shift ;;
    --skip-110m) with_110m=0; shift ;;
    -h | --help) usage ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) llama_build=$1; shift ;;
  esac
done

[ -n "$llama_build" ] || die "no llama.cpp build given: pass its build directory or set LLAMACPP_BUILD
(this script's header says how to make one)"
for t in llama-batched-bench llama-quantize llama-simple; do
  [ -x "$llama_build/bin/$t" ] || die "$llama_build/bin/$t is missing: build it with
  cmake --build $llama_build -j 2 --target llama-batched-bench llama-quantize llama-simple"
done
bench=$eexit_build/benchmarks/eexit-bench-decode
gen=$eexit_build/samples/generate/eexit-generate
for t in "$bench" "$gen"; do
  [ -x "$t" ] || die "$t is missing: cmake --build --preset release -j 2 --target eexit-bench-decode eexit-generate"
done
vocab=$root/../shared/models/tokenizers/ggml-vocab-llama-spm.gguf
[ -f "$vocab" ] || die "$vocab is missing (the llama SPM vocabulary the models borrow)"
"$python" -c "import numpy" 2>/dev/null || die "$python has no numpy (set EEXIT_PYTHON)"
[ "$with_110m" = 1 ] || [ "$with_1b" = 1 ] || die "--skip-110m without --1b: nothing to run"

work=${work:-$eexit_build/vs-llamacpp}
mkdir -p "$work"
out=$work/results-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
lcpp_version=$("$llama_build/bin/llama-batched-bench" --version 2>&1 | grep -m1 version || true)
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)," \
    "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "llama.cpp: $lcpp_version (build $llama_build)"
  echo "eexit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' (modified)')"
  echo "threads $threads, prompt $prompt, new $n_new, reps $reps, LLAMACPP_ARGS='${LLAMACPP_ARGS:-}'"
} | tee "$out/meta.txt"

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# ---- 1. models -----------------------------------------------------------------------
# model SHAPE DTYPE -> path (made when missing)
model() {
  local shape=$1 dt=$2
  local f32=$work/random-$shape-f32.gguf
  if [ ! -s "$f32" ]; then
    echo "making $f32 ..." >&2
    "$python" "$root/tools/gguf_tool.py" random "$f32.tmp" --shape "$shape" --seed 0 \
      --vocab-from "$vocab" >&2
    mv "$f32.tmp" "$f32"
  fi
  [ "$dt" = f32 ] && { echo "$f32"; return; }
  local q=$work/random-$shape-$dt.gguf
  if [ ! -s "$q" ]; then
    local ftype
    ftype=$(echo "$dt" | tr a-z A-Z)
    echo "llama-quantize --pure $f32 -> $ftype ..." >&2
    "$llama_build/bin/llama-quantize" --pure "$f32" "$q.tmp" "$ftype" >"$out/quantize-$shape-$dt.log" 2>&1 ||
      die "llama-quantize failed: see $out/quantize-$shape-$dt.log"
    mv "$q.tmp" "$q"
  fi
  echo "$q"
}

# The 1B shape at f32 is 4.4 GB on disk and in memory for each engine (one at a time).
if [ "$with_1b" = 1 ]; then
  avail=$(awk '/MemAvailable/ {print int($2/1048576)}' /proc/meminfo)
  [ "$avail" -ge 10 ] || die "the 1B shape needs ~10 GiB of free memory (${avail} GiB available)"
fi

# ---- 2. gate -------------------------------------------------------------------------
gate_prompt="Once upon a time, in a small town by the sea"
# gate SHAPE DTYPE REQUIRED(0/1)
gate() {
  local shape=$1 dt=$2 required=$3 f
  f=$(model "$shape" "$dt")
  "$llama_build/bin/llama-simple" -m "$f" -n "$gate_tokens" "$gate_prompt" \
    >"$out/gate-$shape-$dt.llama.txt" 2>"$out/gate-$shape-$dt.llama.log" ||
    die "llama-simple failed on $f: see $out/gate-$shape-$dt.llama.log"
  "$gen" --model "$f" --prompt "$gate_prompt" --max-tokens "$gate_tokens" --threads "$threads" \
    --json >"$out/gate-$shape-$dt.eexit.json" 2>"$out/gate-$shape-$dt.eexit.log" ||
    die "eexit-generate failed on $f: see $out/gate-$shape-$dt.eexit.log"
  "$python" - "$out/gate-$shape-$dt" "$gate_prompt" "$shape $dt" "$required" <<'EOF'
import json, sys
base, prompt, what, required = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
theirs = open(base + ".llama.txt", encoding="utf-8", errors="surrogateescape").read()
# llama-simple echoes the prompt's pieces (BOS as "<s>", SPM's leading space), then the
# generated pieces, then a newline.
echo = "<s> " + prompt
if not theirs.startswith(echo):
    sys.exit("gate %s: llama-simple's output does not start with the prompt echo %r: %r"
             % (what, echo, theirs[:80]))
theirs = theirs[len(echo):].rstrip("\n")
ours = json.loads(open(base + ".eexit.json").read().splitlines()[0])
n = len(ours["token_ids"])
text = ours["text"]
same = 0
while same < min(len(text), len(theirs)) and text[same] == theirs[same]:
    same += 1
ok = text == theirs
print("gate %-10s %s: %d tokens, %s" % (what, "EQUAL" if ok else "differ", n,
      "identical text" if ok else "text agrees for %d of %d chars (ours %r / theirs %r)"
      % (same, max(len(text), len(theirs)), text[same:same + 20], theirs[same:same + 20])))
json.dump({"what": what, "equal": ok, "tokens": n, "chars_agreeing": same,
           "ours": text, "theirs": theirs}, open(base + ".result.json", "w"))
if required and not ok:
    sys.exit("gate failed on %s: greedy outputs differ; no timing on a wrong model" % what)
EOF
}

shapes=()
[ "$with_110m" = 1 ] && shapes+=(110m)
[ "$with_1b" = 1 ] && shapes+=(1b)
dtypes_of() { if [ "$1" = 1b ]; then echo "${DTYPES_1B:-f32,bf16,q8_0,q4_0}"; else echo "$dtypes"; fi; }
batches_of() { if [ "$1" = 1b ]; then echo "${BATCHES_1B:-1,16}"; else echo "$batches"; fi; }

for shape in "${shapes[@]}"; do
  for dt in $(dtypes_of "$shape" | tr , ' '); do
    model "$shape" "$dt" >/dev/null
    gate "$shape" "$dt" "$([ "$dt" = f32 ] && echo 1 || echo 0)" | tee -a "$out/gate.txt"
  done
done

# ---- 3. timing -----------------------------------------------------------------------
max_b=$(echo "$batches,$(batches_of 1b)" | tr , '\n' | sort -n | tail -1)
ctx=$((max_b * (prompt + n_new) + 16))
run_ours() { # SHAPE DTYPE REP
  local f l
  f=$(model "$1" "$2")
  l=$(loadavg)
  "$bench" "$f" --threads "$threads" --prompt "$prompt" --new "$n_new" --batches "$(batches_of "$1")" \
    --reps 1 --decode-reps 1 --no-blas --json 2>>"$out/ours.log" |
    "$python" -c "import json,sys; j=json.loads(sys.stdin.read()); j.update(shape='$1', dtype='$2', rep=$3, load1=$l, t='$(date -u +%T)'); print(json.dumps(j))" \
      >>"$out/ours.jsonl" || die "eexit-bench-decode failed on $f: see $out/ours.log"
}
run_theirs() { # SHAPE DTYPE REP
  local f l
  f=$(model "$1" "$2")
  l=$(loadavg)
  # shellcheck disable=SC2086
  "$llama_build/bin/llama-batched-bench" -m "$f" -t "$threads" -tb "$threads" -c "$ctx" \
    -npp "$prompt" -ntg "$n_new" -npl "$(batches_of "$1")" --output-format jsonl ${LLAMACPP_ARGS:-} \
    2>>"$out/theirs.log" | grep '^{' |
    "$python" -c "
import json, sys
for line in sys.stdin:
    j = json.loads(line); j.update(shape='$1', dtype='$2', rep=$3, load1=$l, t='$(date -u +%T)'); print(json.dumps(j))" \
      >>"$out/theirs.jsonl" || die "llama-batched-bench failed on $f: see $out/theirs.log"
}

t_start=$(date +%s)
for rep in $(seq 1 "$reps"); do
  for shape in "${shapes[@]}"; do
    for dt in $(dtypes_of "$shape" | tr , ' '); do
      echo "rep $rep/$reps $shape $dt (load $(loadavg))"
      if [ $((rep % 2)) = 1 ]; then
        run_ours "$shape" "$dt" "$rep"
        run_theirs "$shape" "$dt" "$rep"
      else
        run_theirs "$shape" "$dt" "$rep"
        run_ours "$shape" "$dt" "$rep"
      fi
    done
  done
done
echo "timing took $(($(date +%s) - t_start)) s"

# ---- 4. summary ----------------------------------------------------------------------
"$python" - "$out" "$prompt" <<'EOF' | tee "$out/summary.md"
import json, statistics, sys
out, prompt = sys.argv[1], int(sys.argv[2])
ours = [json.loads(l) for l in open(out + "/ours.jsonl")]
theirs = [json.loads(l) for l in open(out + "/theirs.jsonl")]
med = statistics.median
loads = [r["load1"] for r in ours + theirs]
print("load average (1 min) at the runs: min %.2f, median %.2f, max %.2f"
      % (min(loads), med(loads), max(loads)))
print("ceilings in the same runs (OpenBLAS, medians): sgemv 1 GiB %.2f GB/s, sgemm 2048^3 %.1f GFLOP/s"
      % (med([r["bandwidth_GBps"] for r in ours]), med([r["sgemm_GFLOPs"] for r in ours])))
print()
print("| shape | dtype | row | eexit tok/s | llama.cpp tok/s | eexit / llama.cpp | eexit of BW | runs |")
print("|---|---|---|---:|---:|---:|---:|---:|")
keys = []
for r in ours:
    if (r["shape"], r["dtype"]) not in keys:
        keys.append((r["shape"], r["dtype"]))
for shape, dt in keys:
    mine = [r for r in ours if r["shape"] == shape and r["dtype"] == dt]
    other = [r for r in theirs if r["shape"] == shape and r["dtype"] == dt]
    for what in ("decode", "prefill"):
        for b in [x["batch"] for x in mine[0]["runs"]]:
            a = [x for r in mine for x in r["runs"] if x["batch"] == b]
            t = [x for x in other if x["pl"] == b]
            if what == "decode":
                va = med([x["ours_tok_s"] for x in a])
                vt = med([x["speed_tg"] for x in t]) if t else float("nan")
                bw = "%.0f%%" % (100 * med([x["ours_frac_bandwidth"] for x in a])) if b == 1 else ""
                row = "decode batch %d" % b
            else:
                va = med([b * prompt / x["ours_prefill_s"] for x in a])
                vt = med([x["speed_pp"] for x in t]) if t else float("nan")
                bw, row = "", "prefill %d x %d" % (b, prompt)
            print("| %s | %s | %s | %.1f | %.1f | %.2fx | %s | %d/%d |"
                  % (shape, dt, row, va, vt, va / vt, bw, len(a), len(t)))
EOF
echo "raw results and logs: $out"
