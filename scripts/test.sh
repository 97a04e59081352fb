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
if [ "${EEXIT_SANITIZE:-0}" = 1 ]; then
  cmake --preset debug -DEEXIT_ENABLE_CUDA=OFF >/dev/null
  cmake --build --preset debug -j "$jobs"
  ctest --preset debug -j "$jobs"
fi
