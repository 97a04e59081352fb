#!/usr/bin/env bash
# The main job: installs what is missing (the build/run set only), builds eexit-generate in
# its own folder (build/demo, `demo` preset: no tests, so it never changes what
# scripts/test.sh builds), streams Shakespeare from the embedded early-exit model with early
# exit, then runs the same prompt at full depth and prints the summary (tokens, mean exit
# layer, tokens/s early exit vs full depth); then the lossless mode (self-speculation) with
# its summary (acceptance, tokens equal to full depth's, speed ratio).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
bash scripts/install-deps.sh
fresh_if_other_generator build/demo
cmake --preset demo >/dev/null
cmake --build --preset demo -j "$(nproc)"
gen=./build/demo/samples/generate/eexit-generate
echo "== 1. early exit, the paper's rule (all-confident; eexit-generate's default on a model with"
echo "==    exit points): tokens leave at confident exits, so the text may differ from full depth's"
"$gen" --prompt "ROMEO:" --max-tokens 200 --policy all-confident --compare-full-depth "$@"
echo
echo "== 2. the lossless mode, self-speculative decoding (--policy self-spec): exit 1 drafts,"
echo "==    full depth verifies, the tokens equal full depth's. On this 10 MB model a step is"
echo "==    compute-bound, so it gains little here (benchmarks/RESULTS.md says why)"
"$gen" --prompt "ROMEO:" --max-tokens 200 --policy self-spec --compare-full-depth 2>&1 | grep '^\[eexit\]'
