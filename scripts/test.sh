#!/usr/bin/env bash
# Installs what is missing, builds everything (release preset) and runs the whole test
# suite except tests that need a GPU. EEXIT_SANITIZE=1 also runs it under ASan/UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)
cmake --preset release -DEEXIT_ENABLE_CUDA=OFF >/dev/null
cmake --build --preset release -j "$jobs"
ctest --preset release -j "$jobs"
# The CUDA backend: a compile check only (no GPU here; benchmarks/gpu/check.sh runs the
# gpu-labelled tests on a GPU machine). Every CUDA source, sm_90 SASS + compute_90 PTX.
nvcc=""
for d in "${CUDA_HOME:-}" /usr/local/cuda; do
  if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then nvcc="$d/bin/nvcc"; break; fi
done
if [ -n "$nvcc" ]; then
  cmake -S . -B build/cuda-compile -DCMAKE_BUILD_TYPE=Release -DEEXIT_ENABLE_CUDA=ON \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DEEXIT_BUILD_SAMPLES=OFF >/dev/null
  cmake --build build/cuda-compile -j "$jobs" --target eexit_cuda cuda_ops_test \
    cuda_engine_test cuda_backend_concept_test eexit-bench-gpu
  # Runs without a GPU: proves "no device" is a clear eexit::error.
  (cd build/cuda-compile && ctest -R cuda_backend_concept --output-on-failure)
else
  echo "test.sh: no nvcc at \$CUDA_HOME or /usr/local/cuda: CUDA compile check skipped"
fi
if [ "${EEXIT_SANITIZE:-0}" = 1 ]; then
  cmake --preset debug -DEEXIT_ENABLE_CUDA=OFF >/dev/null
  cmake --build --preset debug -j "$jobs"
  ctest --preset debug -j "$jobs"
fi
