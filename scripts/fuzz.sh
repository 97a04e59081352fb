#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz/) for N seconds each, one after the other:
#   bash scripts/fuzz.sh [SECONDS=60] [TARGET...]
# Needs clang (libFuzzer). Builds them in build/fuzz (ASan + UBSan), makes the seed corpora
# from the real model files (tools/make_fuzz_seeds.py; safetensors seeds are committed),
# keeps the growing corpora in build/fuzz/corpus/<target> and logs in build/fuzz/logs.
# Prints executions per target; exits 1 if any target found a crash (the reproducer is in
# build/fuzz/artifacts/). EEXIT_FUZZ_NICE=N runs them under nice -n N (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
all=(safetensors_fuzz tokenizer_json_fuzz tokenizer_bin_fuzz llama2c_checkpoint_fuzz
     config_json_fuzz openai_request_fuzz gguf_fuzz)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (libFuzzer needs clang)" >&2; exit 2; }

b=build/fuzz
cmake -S . -B "$b" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEEXIT_BUILD_FUZZERS=ON -DEEXIT_BUILD_SAMPLES=OFF -DEEXIT_BUILD_BENCHMARKS=OFF \
  -DEEXIT_ENABLE_CUDA=OFF >/dev/null
cmake --build "$b" -j "$(nproc)" --target "${targets[@]}"
rm -rf "$b/seeds"
/usr/bin/python3 tools/make_fuzz_seeds.py "$b/seeds"
mkdir -p "$b/logs" "$b/artifacts"

failed=0
for t in "${targets[@]}"; do
  seeds="$b/seeds/${t}"
  [ "$t" = safetensors_fuzz ] && seeds=tests/fuzz/seeds/safetensors
  [ "$t" = gguf_fuzz ] && seeds=tests/fuzz/seeds/gguf
  dict=()  # tests/fuzz/<name>.dict for <name>_fuzz, when there is one
  [ -f "tests/fuzz/${t%_fuzz}.dict" ] && dict=(-dict="tests/fuzz/${t%_fuzz}.dict")
  mkdir -p "$b/corpus/$t"
  log="$b/logs/$t.log"
  rc=0
  nice -n "${EEXIT_FUZZ_NICE:-10}" "$b/tests/$t" -max_total_time="$secs" -timeout=20 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$b/artifacts/$t-" "${dict[@]}" \
    "$b/corpus/$t" "$seeds" >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  if [ "$rc" = 0 ]; then
    echo "fuzz.sh: $t: ${secs}s, $execs executions, $cov, no crash"
  else
    echo "fuzz.sh: $t: FAILED (exit $rc) after $execs executions; see $log" >&2
    grep -m3 -E 'ERROR|runtime error|deadly signal|terminate' "$log" >&2 || true
    failed=1
  fi
done
exit "$failed"
