#!/usr/bin/env bash
# The main job: installs what is missing, builds eexit-generate and generates text.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release -DEEXIT_BUILD_TESTS=OFF -DEEXIT_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build --preset release -j "$(nproc)" --target eexit-generate
shared="${EEXIT_SHARED_DIR:-$(pwd)/../shared}"
./build/release/samples/generate/eexit-generate \
  --model "$shared/models/stories260K/stories260K.bin" \
  --tokenizer "$shared/models/stories260K/tok512.bin" \
  --prompt "Once upon a time" --max-tokens 200 "$@"
