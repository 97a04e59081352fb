#!/usr/bin/env bash
# The README's two commands, in order, on a fresh clone of this checkout's HEAD, then a check
# that the suite that ran is the full one: its test count must equal the count of a separate
# configure of the same clone with every option explicitly on (so a cache left by demo.sh,
# or any script that turns tests off, fails here instead of passing with "No tests"). A
# minimum (EEXIT_CI_MIN_TESTS, default 35) guards against both counts collapsing together.
# Environment is passed through (EEXIT_SANITIZE=1 for the sanitizer pass, as .ci/run does).
# Uses ccache when it is installed. Keeps nothing: the clone is removed at exit.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "$(git -C "$src" status --porcelain --untracked-files=no)" ]; then
  echo "ci-fresh-clone.sh: note: uncommitted changes are not in the clone (it tests HEAD)" >&2
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/eexit-fresh-clone.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
git clone -q --no-hardlinks "$src" "$tmp/eexit"
# Tests read ../shared next to the source tree (EEXIT_SHARED_DIR's default).
if [ -d "$src/../shared" ]; then ln -s "$(cd "$src/../shared" && pwd)" "$tmp/shared"; fi
if command -v ccache >/dev/null && [ -z "${CMAKE_CXX_COMPILER_LAUNCHER:-}" ]; then
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_BASEDIR="$tmp"
fi
cd "$tmp/eexit"
source scripts/lib.sh
trap 'stages_summary; rm -rf "$tmp"' EXIT
stage "scripts/demo.sh"
bash scripts/demo.sh
stage "scripts/test.sh"
bash scripts/test.sh 2>&1 | tee "$tmp/test.log"
stage "test count check"

ran=$(sed -n 's/.*tests passed, [0-9]* tests failed out of \([0-9]*\).*/\1/p' "$tmp/test.log" | head -1)
cmake -S . -B "$tmp/count" -DCMAKE_BUILD_TYPE=Release -DEEXIT_ENABLE_CUDA=OFF \
  -DEEXIT_BUILD_TESTS=ON -DEEXIT_BUILD_SAMPLES=ON -DEEXIT_BUILD_BENCHMARKS=ON >/dev/null
full=$(ctest --test-dir "$tmp/count" -N -LE gpu | sed -n 's/^Total Tests: *\([0-9]*\).*/\1/p')
min=${EEXIT_CI_MIN_TESTS:-35}
echo "ci-fresh-clone.sh: the release run ran ${ran:-no} tests; a full configure defines ${full:-?} (minimum $min)"
if [ -z "$ran" ] || [ -z "$full" ] || [ "$ran" != "$full" ] || [ "$ran" -lt "$min" ]; then
  echo "ci-fresh-clone.sh: FAILED: the README's commands did not run the full test suite" >&2
  exit 1
fi
