#!/usr/bin/env bash
# ctest entry for the end-to-end tests: installs the pinned openai client when missing
# (npm ci, from package-lock.json), then runs node's own test runner.
set -euo pipefail
cd "$(dirname "$0")"
: "${EEXIT_SERVER:?set EEXIT_SERVER to the eexit-server binary}"
if [ ! -d node_modules/openai ]; then
  npm ci --no-audit --no-fund
fi
exec node --test --test-concurrency=1 server.test.mjs
