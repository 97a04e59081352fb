#!/usr/bin/env bash
# The GPU check (issue 11), on a machine with an NVIDIA GPU, the CUDA toolkit, CMake and
# ninja ONLY (no package registry, none of our Debian packages, no ../shared), in <= 8 min:
#   0. versions: nvcc, cmake, ninja, the host compiler, the GPU and its driver
#   1. the carried folder (benchmarks/gpu/prepare.sh, run beforehand where packages are)
#   2. configure (-G Ninja) against the carried folder only, BLAS off
#   3. build the CUDA library, the gpu-labelled tests, eexit-bench-gpu and eexit-generate
#   4. cuda_backend_concept_test (the backend concept; "no device" is a clear error), and
#      eexit-generate --device cuda: the same tokens as --device cpu on stories260K
#   5. ctest -L gpu: per-op parity with CpuBackend, engine tokens + exit layers = the CPU's
#   6. eexit-bench-gpu: decode tok/s, bandwidth; exits non-zero when a request failed
#   7. compute-sanitizer --tool memcheck over the op tests (cuda_ops_test), in what is left
#   8. a short table
# Set-up stages (1-3) stop the check at the first failure, with one line saying which; the
# others all run and the check fails if any failed. Logs go to $OUT (the device tool
# brings that folder back; at most 8 files) or else BUILD_DIR: check.log (everything),
# gpu-tests.log, memcheck.log, bench.log, summary.txt.
#
# usage: benchmarks/gpu/check.sh [--dry-run] [BUILD_DIR]       (default build-gpu)
# On the device tool:  run(command="benchmarks/gpu/check.sh", carry=[".gpu-carry"])
# Env: EEXIT_GPU_CARRY   the carried folder (default .gpu-carry)
#      EEXIT_GPU_DRY_RUN=1 (= --dry-run): every stage that needs no GPU, here: prepares a
#                        fresh carry in a temporary folder unless EEXIT_GPU_CARRY is set,
#                        configures with /usr and /usr/local hidden from find_* and proves
#                        from the compiler's dependency lists that the carried headers, and
#                        no system copy of them, were compiled; GPU stages print SKIPPED.
#                        It also builds eexit-server with CUDA (Boost from this machine: the
#                        server is not part of the GPU build), checks that --device cuda
#                        without a device is a clear error, and that the installed package
#                        exports eexit::cuda.
#      CUDA_HOME / PATH  where nvcc is;  CUDA_ARCHS (default "90-real;90-virtual")
#      EEXIT_GPU_BUDGET_S  the whole check's time limit (default 480; dry run 3600)
#      EEXIT_GPU_CHECK_SMALL=1  the benchmark on its small random shape (smoke test)
set -uo pipefail
cd "$(dirname "$0")/../.."
src=$(pwd)
start=$(date +%s)
dry=${EEXIT_GPU_DRY_RUN:-0}
if [ "${1:-}" = --dry-run ]; then
  dry=1
  shift
fi
build=${1:-build-gpu}
mkdir -p "$build"
build=$(cd "$build" && pwd)
logs=${OUT:-$build}
mkdir -p "$logs"
log=$logs/check.log
summary=$logs/summary.txt
: >"$log"
: >"$summary"
archs=${CUDA_ARCHS:-90-real;90-virtual}
jobs=$(nproc)
failed=()

# 8 minutes on the GPU machine (16 cores). A dry run builds on whatever CI or a shared dev
# machine has, where only the build takes long: it gets an hour.
budget=${EEXIT_GPU_BUDGET_S:-$([ "$dry" = 1 ] && echo 3600 || echo 480)}
left() { echo $((budget - ($(date +%s) - start))); }
stage() { echo "== $* ($(($(date +%s) - start)) s)" | tee -a "$log"; }
note() { echo "$*" | tee -a "$log" "$summary"; }
# A set-up stage failed: its last log lines, one clear line, and stop.
die() {
  tail -25 "$log"
  note "GPU check FAILED at $1 ($(($(date +%s) - start)) s; log $log)"
  exit 1
}
# A stage's time limit: its own share, but never past the whole budget.
limit() {
  local l
  l=$(left)
  [ "$l" -gt "$1" ] && l=$1
  [ "$l" -lt 5 ] && l=5
  echo "$l"
}

# ---- 0. versions ----------------------------------------------------------------------
stage versions
nvcc=""
for c in "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" "$(command -v nvcc 2>/dev/null)" /usr/local/cuda/bin/nvcc; do
  if [ -n "$c" ] && [ -x "$c" ]; then
    nvcc=$c
    break
  fi
done
[ -n "$nvcc" ] || {
  note "versions: no nvcc at \$CUDA_HOME/bin, on PATH or at /usr/local/cuda/bin"
  die versions
}
export CUDA_HOME=$(cd "$(dirname "$nvcc")/.." && pwd)
note "nvcc:   $nvcc ($("$nvcc" --version | grep -o 'release [0-9.]*'))"
command -v cmake >/dev/null || { note "versions: no cmake on PATH"; die versions; }
command -v ninja >/dev/null || { note "versions: no ninja on PATH"; die versions; }
note "cmake:  $(cmake --version | head -1)"
note "ninja:  $(ninja --version)"
cxx=${CXX:-$(command -v g++ || command -v c++ || true)}
[ -n "$cxx" ] || { note "versions: no host C++ compiler (g++ / c++) on PATH"; die versions; }
note "c++:    $cxx ($("$cxx" --version | head -1))"
if [ "$dry" = 1 ]; then
  note "gpu:    SKIPPED (dry run)"
elif command -v nvidia-smi >/dev/null; then
  note "gpu:    $(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1 | head -1)"
else
  note "gpu:    nvidia-smi not found"
fi

# ---- 1. the carried folder ------------------------------------------------------------
stage carry
carry=${EEXIT_GPU_CARRY:-}
if [ -z "$carry" ] && [ "$dry" = 1 ]; then
  carry=$(mktemp -d "${TMPDIR:-/tmp}/eexit-gpu-carry.XXXXXX")
  trap 'rm -rf "$carry"' EXIT
  bash benchmarks/gpu/prepare.sh "$carry" >>"$log" 2>&1 || die "carry (prepare.sh into $carry)"
fi
carry=${carry:-.gpu-carry}
for f in root/usr/include/nlohmann/json.hpp root/usr/include/doctest/doctest.h \
         shared/models/stories260K/stories260K.bin; do
  [ -f "$carry/$f" ] || {
    note "carry: $carry/$f is missing: run benchmarks/gpu/prepare.sh where the packages are, and carry .gpu-carry"
    die carry
  }
done
carry=$(cd "$carry" && pwd)
note "carry:  $carry ($(du -sh "$carry" | cut -f1)): $(grep -v '^[#0-9]' "$carry/MANIFEST" | tr '\n' ' ')"

# ---- 2. configure ---------------------------------------------------------------------
stage configure
# The GPU machine's CMake may be 4.x, which refuses policy versions below 3.5; the carried
# nlohmann-json export asks for 2.8.3...3.22 (allowed), this keeps any older one loading.
export CMAKE_POLICY_VERSION_MINIMUM=3.5
cfg=(-S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$cxx"
  -DEEXIT_ENABLE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" "-DCMAKE_CUDA_ARCHITECTURES=$archs"
  -DEEXIT_WITH_BLAS=OFF -DEEXIT_BUILD_TESTS=ON -DEEXIT_BUILD_BENCHMARKS=ON
  -DEEXIT_BUILD_SAMPLES=ON
  -DCMAKE_PREFIX_PATH="$carry/root/usr" -DEEXIT_SHARED_DIR="$carry/shared"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -Unlohmann_json_DIR -UDOCTEST_INCLUDE_DIR)  # found afresh: a reused build dir may name another carry
# Dry run: the system prefixes, where this machine's copies of the packages live, are
# hidden from every find_package / find_path, so the configure can only succeed on the
# carried folder (the CUDA toolkit is found from nvcc's own folder, which stays visible).
[ "$dry" = 1 ] && cfg+=("-DCMAKE_IGNORE_PREFIX_PATH=/usr;/usr/local;/")
[ -n "${CMAKE_CXX_COMPILER_LAUNCHER:-}" ] && cfg+=(-DCMAKE_CUDA_COMPILER_LAUNCHER="$CMAKE_CXX_COMPILER_LAUNCHER")
timeout "$(limit 120)" cmake "${cfg[@]}" >>"$log" 2>&1 || die configure
for v in nlohmann_json_DIR DOCTEST_INCLUDE_DIR; do
  got=$(sed -n "s/^$v:[A-Z]*=//p" "$build/CMakeCache.txt")
  case "$got" in
    "$carry"/*) echo "configure: $v = $got" >>"$log" ;;
    *) note "configure: $v = '$got' is not in the carried folder $carry"; die configure ;;
  esac
done
grep -q "^BLAS_" "$build/CMakeCache.txt" && { note "configure: BLAS was looked up although EEXIT_WITH_BLAS=OFF"; die configure; }

# ---- 3. build -------------------------------------------------------------------------
stage build
targets=(eexit_cuda cuda_ops_test cuda_engine_test cuda_backend_concept_test eexit-bench-gpu
  eexit-generate)
[ "$dry" = 1 ] && targets+=(eexit-server)
timeout "$(limit $((budget * 5 / 8)))" cmake --build "$build" -j "$jobs" --target "${targets[@]}" >>"$log" 2>&1 || {
  grep -E "error|Error" "$log" | head -20
  die build
}
if [ "$dry" = 1 ]; then
  # Every header the compilers read, from ninja's dependency log: the carried json/doctest
  # headers must be there, and no other copy of them.
  ninja -C "$build" -t deps >"$build/deps.txt" 2>>"$log"
  grep -q "^ *$carry/root/usr/include/nlohmann/json.hpp$" "$build/deps.txt" &&
    grep -q "^ *$carry/root/usr/include/doctest/doctest.h$" "$build/deps.txt" || {
    note "build: the carried nlohmann/doctest headers do not appear in the dependency log"
    die build
  }
  stray=$(grep -E "/(nlohmann|doctest)/|cblas|openblas" "$build/deps.txt" | grep -v "^ *$carry/" | sort -u | head -3)
  [ -z "$stray" ] || { note "build: compiled headers from outside the carried folder: $stray"; die build; }
  for t in tests/cuda_ops_test tests/cuda_engine_test benchmarks/eexit-bench-gpu; do
    ! ldd "$build/$t" 2>/dev/null | grep -qE "lib(open)?blas|liblapack" || { note "build: $t links a BLAS"; die build; }
  done
  note "build:  OK; headers and libraries from the carried folder and the CUDA toolkit only"
else
  note "build:  OK"
fi

# ---- 4. the backend concept test (runs with or without a device) ------------------------
stage "cuda_backend_concept_test"
rc_concept=0
(cd "$build" && timeout "$(limit 60)" ctest -R cuda_backend_concept --output-on-failure --no-tests=error) >>"$log" 2>&1 || rc_concept=$?
if [ $rc_concept -eq 0 ]; then note "concept: OK"; else note "concept: FAILED (rc $rc_concept)"; failed+=(concept); fi

stage "eexit-generate --device cuda"
gen=("$build/samples/generate/eexit-generate" --model "$carry/shared/models/stories260K/stories260K.bin"
  --tokenizer "$carry/shared/models/stories260K/tok512.bin" --prompt "Once upon a time"
  --max-tokens 24 --json)
if [ "$dry" = 1 ]; then
  rc_gen=0
  timeout 60 "${gen[@]}" --device cuda >"$build/gen.out" 2>"$build/gen.err" || rc_gen=$?
  cat "$build/gen.err" >>"$log"
  if [ $rc_gen -eq 1 ] && grep -q "no CUDA device" "$build/gen.err"; then
    note "generate: --device cuda without a device is a clear error: OK"
  else
    note "generate: --device cuda without a device: rc $rc_gen, '$(head -1 "$build/gen.err")'"
    failed+=(generate)
  fi
  stage "installed package exports eexit::cuda; the samples' flags in a CUDA build"
  if (cd "$build" && timeout "$(limit 120)" ctest -R "consumer/exports|_rejects" --output-on-failure --no-tests=error) >>"$log" 2>&1; then
    note "install + flags: eexit::cuda exported, --device/--gpu-memory-fraction checks: OK"
  else
    note "install + flags: FAILED (see consumer/exports, *_rejects* in $log)"
    failed+=(install-flags)
  fi
else
  ids() { grep -o '"token_ids":\[[0-9,]*\]' "$1"; }
  timeout 60 "${gen[@]}" --device cpu >"$build/gen-cpu.out" 2>>"$log"
  timeout 60 "${gen[@]}" --device cuda --gpu-memory-fraction 0.5 >"$build/gen-cuda.out" 2>>"$log"
  if [ -n "$(ids "$build/gen-cpu.out")" ] && [ "$(ids "$build/gen-cpu.out")" = "$(ids "$build/gen-cuda.out")" ]; then
    note "generate: --device cuda tokens = --device cpu tokens: OK"
  else
    note "generate: FAILED: cpu $(ids "$build/gen-cpu.out") cuda $(ids "$build/gen-cuda.out")"
    failed+=(generate)
  fi
fi

# ---- 5. ctest -L gpu --------------------------------------------------------------------
stage "ctest -L gpu"
rc_tests=0
if [ "$dry" = 1 ]; then
  note "gpu tests: SKIPPED (dry run: needs a GPU)"
else
  (cd "$build" && timeout "$(limit 150)" ctest -L gpu -V --timeout 140 --no-tests=error) >"$logs/gpu-tests.log" 2>&1 || rc_tests=$?
  cat "$logs/gpu-tests.log" >>"$log"
  note "gpu tests: $(grep -E "tests passed|tests failed" "$logs/gpu-tests.log" | tail -1) (rc $rc_tests)"
  [ $rc_tests -eq 0 ] || failed+=(gpu-tests)
fi

# ---- 6. benchmark ---------------------------------------------------------------------
stage benchmark
rc_bench=0
if [ "$dry" = 1 ]; then
  note "benchmark: SKIPPED (dry run: needs a GPU)"
else
  bench_args=()
  [ "${EEXIT_GPU_CHECK_SMALL:-0}" = 1 ] && bench_args+=(--small)
  timeout "$(limit 200)" "$build/benchmarks/eexit-bench-gpu" "${bench_args[@]}" >"$logs/bench.log" 2>&1 || rc_bench=$?
  cat "$logs/bench.log" >>"$log"
  [ $rc_bench -eq 0 ] || { failed+=(benchmark); note "benchmark: FAILED (rc $rc_bench): $(grep -m1 -E 'FAILED|eexit-bench-gpu:' "$logs/bench.log")"; }
fi

# ---- 7. memcheck over the op tests (last: it takes what time is left) ------------------
stage "compute-sanitizer memcheck"
rc_mem=0
san=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
if [ "$dry" = 1 ]; then
  note "memcheck: SKIPPED (dry run: needs a GPU)"
elif [ ! -x "$san" ]; then
  note "memcheck: compute-sanitizer not found (\$CUDA_HOME/bin or PATH)"
  failed+=(memcheck)
else
  # --error-exitcode tells the tool's findings apart from a failing test (its own rc).
  timeout "$(limit 480)" "$san" --tool memcheck --error-exitcode 86 --print-limit 20 \
    "$build/tests/cuda_ops_test" >"$logs/memcheck.log" 2>&1 || rc_mem=$?
  cat "$logs/memcheck.log" >>"$log"
  case $rc_mem in
    0) note "memcheck: OK ($(grep -o 'ERROR SUMMARY: [0-9]* errors' "$logs/memcheck.log" | tail -1))" ;;
    86) note "memcheck: FAILED: $(grep -o 'ERROR SUMMARY: [0-9]* errors' "$logs/memcheck.log" | tail -1)" ;;
    124) note "memcheck: FAILED: timed out" ;;
    *) note "memcheck: FAILED (rc $rc_mem): $(grep -m1 -iE 'error|not supported' "$logs/memcheck.log")" ;;
  esac
  [ $rc_mem -eq 0 ] || failed+=(memcheck)
fi

# ---- 8. the table -----------------------------------------------------------------------
{
  echo
  echo "================ GPU check$([ "$dry" = 1 ] && echo " (DRY RUN)"): $(($(date +%s) - start)) s ================"
  if [ "$dry" != 1 ]; then
    echo "-- per-op parity with CpuBackend (normwise relative error, bound)"
    grep -h "PARITY" "$logs/gpu-tests.log" | sed 's/.*PARITY/ /' | sort -u
    echo "-- engine on the GPU vs the CPU"
    grep -h "ENGINE" "$logs/gpu-tests.log" | sed 's/.*ENGINE/ /'
    grep -h -A1 "DIFFERENT" "$logs/gpu-tests.log" | grep "request" | head -5
    echo "-- benchmark (rc $rc_bench)"
    sed -n '/^model /,$p' "$logs/bench.log"
    grep -h "d2d_copy\|device=\|BENCH FAILED" "$logs/bench.log"
  fi
  if [ ${#failed[@]} -eq 0 ]; then echo "GPU check: OK"; else echo "GPU check FAILED: ${failed[*]}"; fi
  echo "logs: $logs"
} | tee -a "$summary" "$log"
[ ${#failed[@]} -eq 0 ]
