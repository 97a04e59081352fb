# Helpers of scripts/*.sh and .ci/run (sourced, not run).
#
# Stage timing:
#   stage NAME        ends the stage in progress (if any) and starts NAME
#   stage_end         ends the stage in progress
#   stages_summary    ends it and prints every stage's wall-clock seconds, one line each,
#                     with the load average (a 2-core machine shared with other jobs builds
#                     several times slower: the figures mean little without it)
# Each line is prefixed with $EEXIT_STAGE_PREFIX (default the calling script's name), so a
# summary printed inside another script's output still says whose stages these were.
_stage_names=()
_stage_secs=()
_stage_name=""
_stage_t0=0
_stage_prefix=${EEXIT_STAGE_PREFIX:-$(basename "$0")}

stage_end() {
  [ -n "$_stage_name" ] || return 0
  local d=$(($(date +%s) - _stage_t0))
  _stage_names+=("$_stage_name")
  _stage_secs+=("$d")
  echo "[$_stage_prefix] stage '$_stage_name' took ${d} s"
  _stage_name=""
}

stage() {
  stage_end
  _stage_name=$1
  _stage_t0=$(date +%s)
  echo "[$_stage_prefix] stage '$1' starts at $(date -u +%T) UTC (load average $(cut -d' ' -f1-3 /proc/loadavg))"
}

stages_summary() {
  stage_end
  local i total=0
  echo "[$_stage_prefix] ---- stage times (wall clock, load average now $(cut -d' ' -f1-3 /proc/loadavg)) ----"
  for i in "${!_stage_names[@]}"; do
    printf '[%s]   %-40s %6d s\n' "$_stage_prefix" "${_stage_names[$i]}" "${_stage_secs[$i]}"
    total=$((total + _stage_secs[i]))
  done
  printf '[%s]   %-40s %6d s\n' "$_stage_prefix" "total" "$total"
}

# A build folder configured earlier with another generator (Unix Makefiles, before the
# presets named Ninja) cannot be reconfigured with Ninja: start it afresh.
fresh_if_other_generator() {
  local cache=$1/CMakeCache.txt
  if [ -f "$cache" ] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$cache"; then
    echo "$(basename "$0"): $1 was configured with another generator: configuring it afresh"
    rm -rf "$1/CMakeCache.txt" "$1/CMakeFiles"
  fi
}

# CI's time budget (.ci/run): ci_budget SECONDS WARN_MIN FAIL_MIN prints how long the run
# took; past FAIL_MIN minutes it says FAILED and returns 1, past WARN_MIN it prints a loud
# warning and returns 0 (tests/scripts/ci_budget.sh checks all three cases).
ci_budget() {
  local secs=$1 warn_min=$2 fail_min=$3
  local min=$((secs / 60))
  echo "[ci] the whole run took ${secs} s (${min} min; budget: warn past ${warn_min} min, fail past ${fail_min} min; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
  if [ "$secs" -gt $((fail_min * 60)) ]; then
    echo "[ci] FAILED: the run took ${min} min, past the ${fail_min}-minute budget (CI's limit is 90)." >&2
    echo "[ci] See the stage times above for where it went; make the slow stage faster." >&2
    return 1
  elif [ "$secs" -gt $((warn_min * 60)) ]; then
    cat >&2 <<WARN
[ci] ##########################################################################
[ci] WARNING: this CI run took ${min} min, past the ${warn_min}-minute warning line.
[ci] It fails past ${fail_min} min, and CI's hard limit is 90. The stage times above
[ci] say where the time went: cut it before the next heavy change lands.
[ci] ##########################################################################
WARN
  fi
  return 0
}
