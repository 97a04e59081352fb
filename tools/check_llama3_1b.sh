#!/bin/bash
# Our forward on a true-size Llama 3.2 1B-config checkpoint (facebook/layerskip-llama3.2-1B's
# config, random bf16 weights) against the float64 reference: logits of the final head and of
# the shared exit heads, and every layer's K/V, for a 16-token prompt, in its HF form and its
# GGUF bf16 form (tools/gguf_tool.py from-hf). Prints the errors (benchmarks/RESULTS.md,
# "Llama 3.2 1B config: forward vs float64 reference").
#
# usage: tools/check_llama3_1b.sh [BUILD_DIR] [MODEL_DIR]
#   BUILD_DIR: a build with the target llama3_forward_test (default build/release)
#   MODEL_DIR: default /work/bench-models/l32-1b; made there if missing (2.5 GB) with
#     make_random_model.py --preset llama-3.2-1b --exit-layers 3,7 --max-seq-len 2048
# Memory: the reference holds the bf16 weights (2.5 GB) and widens one matrix at a time to
# float64 (the tied 128256 x 2048 head: 2.1 GB), ~6 GB at its peak; our forward ~3 GB.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build/release}
model=${2:-/work/bench-models/l32-1b}
py=/usr/bin/python3
if [ ! -f "$model/config.json" ]; then
  "$py" "$root/tools/make_random_model.py" "$model" --preset llama-3.2-1b --exit-layers 3,7 \
    --max-seq-len 2048
fi
out=$build/l32_1b
mkdir -p "$out"
gguf=$out/l32-1b.bf16.gguf
[ -f "$gguf" ] || "$py" "$root/tools/gguf_tool.py" from-hf "$model" "$gguf"
ref=$out/reference.json
[ -f "$ref" ] || "$py" "$root/tools/reference_dump.py" "$model" "$ref" --tokens 16 --seed 0 \
  --exit-layers 3,7
for m in "$model" "$gguf"; do
  EEXIT_L32_1B_MODEL=$m EEXIT_L32_1B_REF=$ref "$build/tests/llama3_forward_test" \
    --test-case='true-size*' --success=false --no-version
done
