#!/usr/bin/env bash
# The test command: installs what is missing, builds everything (release preset: tests,
# samples, benchmarks), runs the whole test suite except tests that need a GPU, then the
# CUDA compile check (the GPU check's dry run) when nvcc is there. Every ctest call fails
# when it finds no test (--no-tests=error), so a build without tests can never pass.
# Ends with each stage's wall-clock time (scripts/lib.sh).
#   EEXIT_SANITIZE=1       also the sanitizer pass (CI): the tests built and run again under
#                          ASan/UBSan (debug preset), then, with clang installed, each
#                          libFuzzer target for EEXIT_FUZZ_SECONDS (20; 0 skips) from its seeds
#   EEXIT_CUDA_CHECK=0     skips the CUDA compile check
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
trap stages_summary EXIT
jobs=$(nproc)

stage "install packages (apt, what is missing)"
bash scripts/install-deps.sh --tests

stage "release: configure + build"
fresh_if_other_generator build/release
# Every option explicitly, whatever an earlier configure left in the cache.
cmake --preset release -DEEXIT_ENABLE_CUDA=OFF -DEEXIT_BUILD_TESTS=ON -DEEXIT_BUILD_SAMPLES=ON \
  -DEEXIT_BUILD_BENCHMARKS=ON -DEEXIT_PORTABLE_TESTS=ON >/dev/null
cmake --build --preset release -j "$jobs"

stage "release: ctest"
ctest --preset release -j "$jobs" --no-tests=error

# ---- the CUDA compile check: the GPU check's dry run (issue 11) ----------------------------
# No GPU here: benchmarks/gpu/check.sh --dry-run runs every stage of the GPU check that
# needs none. It prepares the carried folder (benchmarks/gpu/prepare.sh) in a temporary
# directory, configures with the system prefixes hidden and builds the CUDA library, the
# gpu-labelled tests, eexit-bench-gpu and the samples with nvcc against that folder only
# (proved from the dependency log), runs cuda_backend_concept_test (no device is a clear
# eexit::error), checks eexit-generate --device cuda and the installed eexit::cuda export.
# This is also the CUDA compile check (every CUDA source, sm_90 SASS + compute_90 PTX).
nvcc=""
for d in "${CUDA_HOME:-}" /usr/local/cuda; do
  if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then nvcc="$d/bin/nvcc"; break; fi
done
if [ "${EEXIT_CUDA_CHECK:-1}" = 0 ]; then
  echo "test.sh: EEXIT_CUDA_CHECK=0: GPU check dry run (CUDA compile check) skipped"
elif [ -n "$nvcc" ]; then
  stage "CUDA compile check (GPU check dry run)"
  CUDA_HOME=$(dirname "$(dirname "$nvcc")") OUT=build/gpu-dry-run \
    bash benchmarks/gpu/check.sh --dry-run build/gpu-dry-run
else
  echo "test.sh: no nvcc at \$CUDA_HOME or /usr/local/cuda: GPU check dry run skipped"
fi

if [ "${EEXIT_SANITIZE:-0}" = 1 ]; then
  # The tests and the samples they run, no benchmarks, no *_portable kernel tests (the same
  # kernels as the native ones, compiled without -march; the native tests run every ISA
  # variant of them under the sanitizers).
  stage "sanitizers: configure + build"
  fresh_if_other_generator build/debug
  cmake --preset debug -DEEXIT_ENABLE_CUDA=OFF -DEEXIT_BUILD_TESTS=ON -DEEXIT_BUILD_SAMPLES=ON \
    -DEEXIT_BUILD_BENCHMARKS=OFF -DEEXIT_PORTABLE_TESTS=OFF >/dev/null
  cmake --build --preset debug -j "$jobs"
  stage "sanitizers: ctest"
  ctest --preset debug -j "$jobs" --no-tests=error
  # Fuzzing smoke run: every target for a few seconds from its seeds (scripts/fuzz.sh; long
  # runs and their results: tests/fuzz/README.md).
  fuzz_secs=${EEXIT_FUZZ_SECONDS:-20}
  if [ "$fuzz_secs" != 0 ] && command -v clang++ >/dev/null; then
    stage "fuzzing smoke run (${fuzz_secs} s a target)"
    bash scripts/fuzz.sh "$fuzz_secs"
  elif [ "$fuzz_secs" != 0 ]; then
    echo "test.sh: no clang++: fuzzing smoke run skipped"
  fi
fi
