#!/usr/bin/env bash
# Installs what is missing, builds everything (release preset) and runs the whole test
# suite except tests that need a GPU. EEXIT_SANITIZE=1 also runs it under ASan/UBSan.
# Every ctest call fails when it finds no test (--no-tests=error), so a build without tests
# can never pass. With clang present, each libFuzzer target runs EEXIT_FUZZ_SECONDS (20; 0
# skips) too. EEXIT_CUDA_CHECK=0 skips the CUDA compile check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --tests
jobs=$(nproc)
# Every option explicitly, whatever an earlier configure left in the cache.
cmake --preset release -DEEXIT_ENABLE_CUDA=OFF -DEEXIT_BUILD_TESTS=ON -DEEXIT_BUILD_SAMPLES=ON \
  -DEEXIT_BUILD_BENCHMARKS=ON >/dev/null
cmake --build --preset release -j "$jobs"
ctest --preset release -j "$jobs" --no-tests=error
# The CUDA backend: a compile check only (no GPU here; benchmarks/gpu/check.sh runs the
# gpu-labelled tests on a GPU machine). Every CUDA source, sm_90 SASS + compute_90 PTX.
nvcc=""
for d in "${CUDA_HOME:-}" /usr/local/cuda; do
  if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then nvcc="$d/bin/nvcc"; break; fi
done
if [ "${EEXIT_CUDA_CHECK:-1}" = 0 ]; then
  echo "test.sh: EEXIT_CUDA_CHECK=0: CUDA compile check skipped"
elif [ -n "$nvcc" ]; then
  cmake -S . -B build/cuda-compile -DCMAKE_BUILD_TYPE=Release -DEEXIT_ENABLE_CUDA=ON \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DEEXIT_BUILD_SAMPLES=OFF >/dev/null
  cmake --build build/cuda-compile -j "$jobs" --target eexit_cuda cuda_ops_test \
    cuda_engine_test cuda_backend_concept_test eexit-bench-gpu
  # Runs without a GPU: proves "no device" is a clear eexit::error.
  (cd build/cuda-compile && ctest -R cuda_backend_concept --output-on-failure --no-tests=error)
else
  echo "test.sh: no nvcc at \$CUDA_HOME or /usr/local/cuda: CUDA compile check skipped"
fi
if [ "${EEXIT_SANITIZE:-0}" = 1 ]; then
  cmake --preset debug -DEEXIT_ENABLE_CUDA=OFF -DEEXIT_BUILD_TESTS=ON >/dev/null
  cmake --build --preset debug -j "$jobs"
  ctest --preset debug -j "$jobs" --no-tests=error
fi
# Fuzzing smoke run: every target for a few seconds from its seeds (scripts/fuzz.sh; long
# runs and their results: tests/fuzz/README.md).
fuzz_secs=${EEXIT_FUZZ_SECONDS:-20}
if [ "$fuzz_secs" != 0 ] && command -v clang++ >/dev/null; then
  bash scripts/fuzz.sh "$fuzz_secs"
elif [ "$fuzz_secs" != 0 ]; then
  echo "test.sh: no clang++: fuzzing smoke run skipped"
fi
