#!/usr/bin/env bash
# The CI budget check of .ci/run (scripts/lib.sh ci_budget): quiet and passing inside the
# warning line, a loud warning but passing past it, FAILED and exit 1 past the fail line.
set -uo pipefail
source "$1/scripts/lib.sh"
bad=0
check() {  # check SECONDS WANT_RC PATTERN NOT_PATTERN
  local out rc
  out=$(ci_budget "$1" 45 80 2>&1)
  rc=$?
  if [ "$rc" != "$2" ] || ! grep -q "$3" <<<"$out" || { [ -n "$4" ] && grep -q "$4" <<<"$out"; }; then
    echo "ci_budget $1 s: rc $rc (want $2), output:"
    echo "$out"
    bad=1
  fi
}
check 1500 0 "took 1500 s (25 min" "WARNING\|FAILED"
check $((50 * 60)) 0 "WARNING: this CI run took 50 min" "FAILED"
check $((80 * 60)) 0 "WARNING" "FAILED"
check $((85 * 60)) 1 "FAILED: the run took 85 min, past the 80-minute budget" "WARNING"
[ "$bad" = 0 ] && echo "ci_budget: 4 cases passed"
exit "$bad"
