#!/usr/bin/env bash
# ctest entry for the Llama 3 tokenizer and chat tests (tests/text/llama3/tests.cmake).
#   run.sh fixtures OUTDIR                 tokenizer.json, configs, vocab.gguf into OUTDIR
#   run.sh compare OUTDIR DRIVER SHAKESPEARE
#   run.sh chat OUTDIR SERVER
# Needs node and npm: npm ci installs the pinned reference packages when node_modules is
# missing. A missing node/npm FAILS the test (the tests exist to compare with them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found: these tests need node and npm" >&2; exit 1; }
done
if [ ! -d "$here/node_modules/llama3-tokenizer-js" ] || [ ! -d "$here/node_modules/@huggingface/tokenizers" ] ||
  [ ! -d "$here/node_modules/@huggingface/jinja" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi
cmd="$1" out="$2"
shift 2
case "$cmd" in
  fixtures)
    node "$here/make_fixtures.mjs" "$out"
    /usr/bin/python3 "$here/../../../tools/gguf_tool.py" vocab "$out/tokenizer.json" "$out/vocab.gguf" \
      --pre llama-bpe --bos 128000 --eos 128009 --eot 128009
    ;;
  compare) exec node "$here/compare.mjs" "$1" "$out" "$2" ;;
  chat) exec node --test --test-concurrency=1 "$here/chat.test.mjs" ;;
  *) echo "run.sh: unknown command $cmd" >&2; exit 2 ;;
esac
