#!/usr/bin/env bash
# The main job: installs what is missing (the build/run set only), builds eexit-generate in
# its own folder (build/demo, `demo` preset: no tests, so it never changes what
# scripts/test.sh builds), streams Shakespeare from the embedded early-exit model with early
# exit, then runs the same prompt at full depth and prints the summary (tokens, mean exit
# layer, tokens/s early exit vs full depth).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
bash scripts/install-deps.sh
fresh_if_other_generator build/demo
cmake --preset demo >/dev/null
cmake --build --preset demo -j "$(nproc)"
./build/demo/samples/generate/eexit-generate --prompt "ROMEO:" --max-tokens 200 \
  --policy all-confident --compare-full-depth "$@"
