#!/usr/bin/env bash
# The main job: installs what is missing, builds eexit-generate, streams Shakespeare from
# the embedded early-exit model with early exit, then runs the same prompt at full depth
# and prints the summary (tokens, mean exit layer, tokens/s early exit vs full depth).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release -DEEXIT_ENABLE_CUDA=OFF -DEEXIT_BUILD_TESTS=OFF -DEEXIT_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build --preset release -j "$(nproc)" --target eexit-generate
./build/release/samples/generate/eexit-generate --prompt "ROMEO:" --max-tokens 200 \
  --policy all-confident --compare-full-depth "$@"
