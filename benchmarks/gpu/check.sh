#!/usr/bin/env bash
# The GPU check (issue: CUDA backend), on a machine with an NVIDIA GPU, within 8 minutes:
#   1. configure + build the CUDA backend, the gpu-labelled tests and eexit-bench-gpu
#   2. ctest -L gpu: per-op parity with CpuBackend (fp32 <= 1e-5, bf16 <= 1e-2 normwise),
#      stories260K greedy identical to the CPU, early-exit tokens + exit layers identical
#   3. eexit-bench-gpu: decode tokens/s at batch 1/16/64 for FullDepth, AllConfident and
#      SplitAtExit on a random-weight 1B Llama-shape bf16 model (scripted exits) and on the
#      embedded model; bandwidth at batch 1 against a device-to-device copy
#   4. a short table of all of it
# usage: benchmarks/gpu/check.sh [BUILD_DIR]   (default build-gpu; CUDA_ARCHS=90 by default)
# Env: EEXIT_GPU_CHECK_SMALL=1 runs the benchmark on the small random shape (smoke test).
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
build=${1:-build-gpu}
archs=${CUDA_ARCHS:-90-real;90-virtual}
jobs=$(nproc)
log=$build/gpu-check.log
mkdir -p "$build"
: >"$log"
deadline() { echo $((480 - ($(date +%s) - start))); }
section() { echo "== $* ($(($(date +%s) - start)) s)" | tee -a "$log"; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}

section configure
if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DEEXIT_ENABLE_CUDA=ON \
     "-DCMAKE_CUDA_ARCHITECTURES=$archs" -DEEXIT_BUILD_TESTS=ON -DEEXIT_BUILD_BENCHMARKS=ON \
     -DEEXIT_BUILD_SAMPLES=OFF >>"$log" 2>&1; then
  tail -30 "$log"; echo "configure FAILED"; exit 1
fi
section build
if ! timeout "$(deadline)" cmake --build "$build" -j "$jobs" --target eexit_cuda cuda_ops_test \
     cuda_engine_test cuda_backend_concept_test eexit-bench-gpu >>"$log" 2>&1; then
  grep -E "error|Error" "$log" | head -30; echo "build FAILED"; exit 1
fi

section "ctest -L gpu"
(cd "$build" && timeout "$(deadline)" ctest -L gpu -V --timeout 240 --no-tests=error) >"$build/gpu-tests.log" 2>&1
tests_rc=$?
cat "$build/gpu-tests.log" >>"$log"
(cd "$build" && timeout 60 ctest -R cuda_backend_concept --output-on-failure --no-tests=error) >>"$log" 2>&1

section benchmark
bench_args=()
[ "${EEXIT_GPU_CHECK_SMALL:-0}" = 1 ] && bench_args+=(--small)
timeout "$(deadline)" "$build/benchmarks/eexit-bench-gpu" "${bench_args[@]}" >"$build/gpu-bench.log" 2>&1
bench_rc=$?
cat "$build/gpu-bench.log" >>"$log"

echo
echo "================ GPU check: $(($(date +%s) - start)) s ================"
echo "-- per-op parity with CpuBackend (normwise relative error, bound)"
grep -h "PARITY" "$build/gpu-tests.log" | sed 's/.*PARITY/ /' | sort -u
echo "-- engine on the GPU vs the CPU"
grep -h "ENGINE" "$build/gpu-tests.log" | sed 's/.*ENGINE/ /'
grep -h -A1 "DIFFERENT" "$build/gpu-tests.log" | grep "request" | head -5
echo "-- gpu tests: $(grep -E "tests passed|tests failed" "$build/gpu-tests.log" | tail -1) (rc $tests_rc)"
echo "-- benchmark (rc $bench_rc)"
sed -n '/^model /,$p' "$build/gpu-bench.log"
grep -h "d2d_copy\|device=" "$build/gpu-bench.log"
[ $bench_rc -ne 0 ] && tail -5 "$build/gpu-bench.log"
echo "full log: $log"
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ]
