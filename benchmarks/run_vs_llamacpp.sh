#!/usr/bin/env bash
# eexit vs llama.cpp on the CPU, on the SAME GGUF files, in one run (issue 10, item 6).
#
# usage: benchmarks/run_vs_llamacpp.sh [LLAMACPP_BUILD] [options]
#   LLAMACPP_BUILD        a llama.cpp CMake build directory (or env LLAMACPP_BUILD) holding
#                         bin/llama-batched-bench, bin/llama-quantize and bin/llama-completion
#                         (an older build's bin/llama-cli serves instead of llama-completion)
#   --eexit-build DIR     our build (default build/release; env EEXIT_BUILD): needs
#                         benchmarks/eexit-bench-decode and samples/generate/eexit-generate
#   --work DIR            where the model files go (default DIR/vs-llamacpp of --eexit-build;
#                         kept between runs: ~0.5 GB per 110M-shape dtype, 4.4 GB for 1B f32)
#   --reps N              interleaved repetitions per configuration (default 3; 1 = quick)
#   --dtypes LIST         default f32,bf16,f16,q8_0,q4_0; also q4_k_m, q5_k_m, q6_k
#                         (llama.cpp's mixed presets, made WITHOUT --pure: Q4_K_M is Q4_K
#                         with Q6_K for the output and some attn_v / ffn_down tensors)
#   --batches LIST        decode batch sizes (parallel sequences; default 1,4,16)
#   --prompt N --new N    prompt tokens per sequence (default 128), tokens generated (64)
#   --threads N           default 2
#   --gate-tokens N       greedy tokens compared before timing (default 32)
#   --1b                  also the 1B shape (GQA 32/8; f32,bf16,q8_0,q4_0 at batch 1,16)
#   --skip-110m           only the 1B shape (with --1b)
#   env LLAMACPP_ARGS     extra llama-batched-bench / llama-completion arguments
#                         (e.g. "-ctk f32 -ctv f32 -fa off")
#   env OMP_WAIT_POLICY   passive: on a SHARED machine, set it. llama.cpp's OpenMP build
#                         spins at every op's barrier; when another process holds one of
#                         the 2 cores that costs it 5-10x at batch 1 (measured: 110M f32
#                         decode 4.8-7.8 tok/s spinning, 46-47 passive, at load 5). Ours
#                         yields. On a quiet machine leave it unset (llama.cpp's default).
#
# Making a llama.cpp build (outside this repository; nothing of it is committed). From a
# checkout of ggml-org/llama.cpp (measured at upstream commit 3a92bc99d, 2026-05-16):
#   cmake -S llama.cpp -B llama.cpp/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
#         -DGGML_CUDA=OFF -DLLAMA_CURL=OFF
#   cmake --build llama.cpp/build -j 2 --target llama-bench llama-batched-bench \
#         llama-quantize llama-completion
# and ours: cmake --preset release -DEEXIT_ENABLE_CUDA=OFF &&
#   cmake --build --preset release -j 2 --target eexit-bench-decode eexit-generate
#
# What it does:
# 1. Models: tools/gguf_tool.py random writes a random Llama of the 110M shape (dim 768,
#    12 layers, 12/12 heads, hidden 2048) and, with --1b, of a 1B shape (dim 2048, 16
#    layers, 32/8 heads, hidden 5632), vocab 32000 with the llama SPM tokenizer of
#    ../shared/models/tokenizers/ggml-vocab-llama-spm.gguf, F32. llama.cpp's own
#    llama-quantize --pure makes F16, BF16, Q8_0 and Q4_0 from it (--pure: every matrix in
#    that type, no Q6_K output tensor); the K-quant presets (q4_k_m, q5_k_m, q6_k) are made
#    as users download them, without --pure. Both engines read each file as it is (ours keeps the
#    file's precision: --dtype auto).
# 2. Gate: the same prompt text through llama-completion (greedy, llama.cpp's tokenizer,
#    the llama.cpp settings of the timing runs) and eexit-generate (greedy, our GGUF
#    tokenizer), and its prompt ids through tools/reference_forward.py (float64 PyTorch, on
#    the F32 file), which also gives each step's top-1 minus top-2 logit. Both engines must
#    produce the reference's tokens up to its first near-tie (margin < GATE_TIE, 0.02;
#    logits have std ~4 here) on F32, else the script stops; the other dtypes are reported
#    (their rounding differs: e.g. llama.cpp quantizes activations for Q8_0/Q4_0).
#    Only plain pieces can win (the random output layer gives special and byte tokens a
#    logit of 0), so llama.cpp's text is its tokens, piece by piece.
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
completion=$llama_build/bin/llama-completion
[ -x "$completion" ] || completion=$llama_build/bin/llama-cli  # builds before llama-completion
for t in llama-batched-bench llama-quantize $(basename "$completion"); do
  [ -x "$llama_build/bin/$t" ] || die "$llama_build/bin/$t is missing: build it with
  cmake --build $llama_build -j 2 --target llama-batched-bench llama-quantize llama-completion"
done
bench=$eexit_build/benchmarks/eexit-bench-decode
gen=$eexit_build/samples/generate/eexit-generate
for t in "$bench" "$gen"; do
  [ -x "$t" ] || die "$t is missing: cmake --build --preset release -j 2 --target eexit-bench-decode eexit-generate"
done
vocab=$root/../shared/models/tokenizers/ggml-vocab-llama-spm.gguf
[ -f "$vocab" ] || die "$vocab is missing (the llama SPM vocabulary the models borrow)"
"$python" -c "import numpy, torch" 2>/dev/null ||
  die "$python lacks numpy or torch (the model tool and the reference need them; set EEXIT_PYTHON)"
[ "$with_110m" = 1 ] || [ "$with_1b" = 1 ] || die "--skip-110m without --1b: nothing to run"

work=${work:-$eexit_build/vs-llamacpp}
mkdir -p "$work"
out=$work/results-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
# llama.cpp's commit: its git checkout, or an UPSTREAM_COMMIT file in an extracted tree.
lcpp_src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$llama_build/CMakeCache.txt" 2>/dev/null || true)
lcpp_version=$(git -C "${lcpp_src:-/nonexistent}" rev-parse --short HEAD 2>/dev/null ||
  cat "$lcpp_src/UPSTREAM_COMMIT" 2>/dev/null || echo unknown)
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)," \
    "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "llama.cpp: commit $lcpp_version (build $llama_build; $(grep -c '^GGML_OPENMP:BOOL=ON' "$llama_build/CMakeCache.txt" 2>/dev/null | sed 's/1/OpenMP/;s/0/no OpenMP/'))"
  echo "eexit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' (modified)')"
  echo "threads $threads, prompt $prompt, new $n_new, reps $reps, LLAMACPP_ARGS='${LLAMACPP_ARGS:-}'," \
    "OMP_WAIT_POLICY='${OMP_WAIT_POLICY:-}'"
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
    local ftype pure=--pure
    ftype=$(echo "$dt" | tr '[:lower:]' '[:upper:]')
    case $dt in q*_k*) pure="" ;; esac  # the K-quant mixes as llama.cpp's presets make them
    echo "llama-quantize $pure $f32 -> $ftype ..." >&2
    # shellcheck disable=SC2086
    "$llama_build/bin/llama-quantize" $pure "$f32" "$q.tmp" "$ftype" >"$out/quantize-$shape-$dt.log" 2>&1 ||
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
# gate SHAPE DTYPE REQUIRED(0/1) TOKENS
gate() {
  local shape=$1 dt=$2 required=$3 n=$4 f g=$out/gate-$1-$2
  f=$(model "$shape" "$dt")
  # llama-completion: greedy (--temp 0) with the llama.cpp settings of the timing runs;
  # --verbose-prompt prints its prompt ids (the reference's input), "  9038 -> ' Once'",
  # behind a log prefix ending in " I " in newer builds, bare in older ones (llama-cli).
  # shellcheck disable=SC2086
  "$completion" -m "$f" -n "$n" -p "$gate_prompt" -no-cnv --temp 0 \
    -t "$threads" --verbose-prompt --no-warmup ${LLAMACPP_ARGS:-} </dev/null \
    >"$g.llama.txt" 2>"$g.llama.log" || die "llama-completion failed on $f: see $g.llama.log"
  "$gen" --model "$f" --prompt "$gate_prompt" --max-tokens "$n" --threads "$threads" \
    --json >"$g.eexit.json" 2>"$g.eexit.log" || die "eexit-generate failed on $f: see $g.eexit.log"
  # The reference of the F32 file, kept beside it (made again when the file is newer).
  local ref=$work/reference-$shape-$n.json
  if [ ! -s "$ref" ] || [ "$(model "$shape" f32)" -nt "$ref" ]; then
    echo "float64 reference (tools/reference_forward.py) of $shape, $n tokens ..." >&2
    # shellcheck disable=SC2046
    "$python" "$root/tools/reference_forward.py" "$(model "$shape" f32)" --greedy "$n" \
      $(sed -n "s/^\(.* I \)\{0,1\} *\([0-9][0-9]*\) -> '.*/\2/p" "$g.llama.log") >"$ref.tmp"
    mv "$ref.tmp" "$ref"
  fi
  "$python" - "$g" "$gate_prompt" "$shape $dt" "$required" "$ref" "$vocab" "$root/tools" \
    "${GATE_TIE:-0.02}" <<'EOF'
import json, sys
g, prompt, what, required, ref, vocab, tools, tie = sys.argv[1:9]
required, tie = required == "1", float(tie)
sys.path.insert(0, tools)
import gguf_tool
meta = dict((k, v) for k, _, v, _ in gguf_tool.Reader(vocab).kv)
pieces = [p.replace("\u2581", " ") for p in meta["tokenizer.ggml.tokens"]]
r = json.load(open(ref))
# Compare up to the first step whose reference top-1 / top-2 logits are within `tie`:
# there, rounding that the engines may legitimately differ in decides the token.
k = next((i for i, m in enumerate(r["margins"]) if m < tie), len(r["margins"]))
want = "".join(pieces[t] for t in r["tokens"][:k])
ours = json.loads(open(g + ".eexit.json").read().splitlines()[0])
theirs = open(g + ".llama.txt", encoding="utf-8", errors="surrogateescape").read()
echo = " " + prompt  # llama-completion echoes the prompt's pieces (SPM's leading space)
if not theirs.startswith(echo):
    sys.exit("gate %s: llama-completion's output does not start with the prompt echo %r: %r"
             % (what, echo, theirs[:80]))
theirs = theirs[len(echo):].rstrip("\n")


def agree(ids, text):  # how many tokens of ids text starts with, piece by piece
    n, pos = 0, 0
    for t in ids:
        if text[pos:pos + len(pieces[t])] != pieces[t]:
            break
        n, pos = n + 1, pos + len(pieces[t])
    return n


ours_ok = ours["token_ids"][:k] == r["tokens"][:k]
theirs_ok = theirs.startswith(want)
ref_text = "".join(pieces[t] for t in r["tokens"])
if required:
    line = ("gate %-9s float64 reference: %d of %d tokens before its first near-tie (margin < %g): "
            "eexit %s, llama.cpp %s | equal to the reference: eexit %d, llama.cpp %d tokens"
            % (what, k, len(r["tokens"]), tie, "ok" if ours_ok else "DIFFERS",
               "ok" if theirs_ok else "DIFFERS", agree(ours["token_ids"], ref_text),
               agree(r["tokens"], theirs)))
else:  # another precision than the f32 reference: how far the two engines agree
    line = ("gate %-9s (informative) eexit = llama.cpp for %d of %d tokens; = f32 reference: "
            "eexit %d, llama.cpp %d" % (what, agree(ours["token_ids"], theirs), len(r["tokens"]),
                                        agree(ours["token_ids"], ref_text), agree(r["tokens"], theirs)))
print(line)
json.dump({"what": what, "compared_tokens": k, "eexit_ok": ours_ok, "llama_ok": theirs_ok,
           "line": line}, open(g + ".result.json", "w"))
if required and not (ours_ok and theirs_ok):
    sys.exit("gate failed on %s: greedy tokens differ from the float64 reference before a "
             "near-tie; no timing on a model the engines disagree about" % what)
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
    gate "$shape" "$dt" "$([ "$dt" = f32 ] && echo 1 || echo 0)" \
      "$([ "$shape" = 1b ] && echo "${GATE_TOKENS_1B:-16}" || echo "$gate_tokens")" | tee -a "$out/gate.txt"
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
    --reps 3 --decode-reps 1 --no-blas --json 2>>"$out/ours.log" |
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
print("Best of the repetitions per side (the figure least hurt by other load; the rest of")
print("RESULTS.md reads the same way), medians beside them. of BW (batch 1): tok/s x bytes of")
print("the file's tensors + K/V per token / the sgemv probe of the same runs.")
print()
print("| shape | dtype | row | eexit tok/s | llama.cpp tok/s | eexit / llama.cpp | medians: eexit / llama.cpp (ratio) | of BW: eexit / llama.cpp | runs |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|")
keys = []
for r in ours:
    if (r["shape"], r["dtype"]) not in keys:
        keys.append((r["shape"], r["dtype"]))
nan = float("nan")
for shape, dt in keys:
    mine = [r for r in ours if r["shape"] == shape and r["dtype"] == dt]
    other = [r for r in theirs if r["shape"] == shape and r["dtype"] == dt]
    per_tok = med([(r["weight_MB"] + r["kv_MB_per_token"]) * 1e6 / (r["bandwidth_GBps"] * 1e9)
                   for r in mine])
    for what in ("decode", "prefill"):
        for b in [x["batch"] for x in mine[0]["runs"]]:
            a = [x for r in mine for x in r["runs"] if x["batch"] == b]
            t = [x for x in other if x["pl"] == b]
            if what == "decode":
                xa = [x["ours_tok_s"] for x in a]
                xt = [x["speed_tg"] for x in t]
                row = "decode batch %d" % b
            else:
                xa = [b * prompt / x["ours_prefill_s"] for x in a]
                xt = [x["speed_pp"] for x in t]
                row = "prefill %d x %d" % (b, prompt)
            ba, bt = max(xa), max(xt) if xt else nan
            ma, mt = med(xa), med(xt) if xt else nan
            bw = "%.0f%% / %.0f%%" % (100 * ba * per_tok, 100 * bt * per_tok) if what == "decode" and b == 1 else ""
            print("| %s | %s | %s | %.1f | %.1f | **%.2fx** | %.1f / %.1f (%.2fx) | %s | %d/%d |"
                  % (shape, dt, row, ba, bt, ba / bt, ma, mt, ma / mt, bw, len(a), len(t)))
EOF
echo "raw results and logs: $out"
