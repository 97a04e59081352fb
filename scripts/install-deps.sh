#!/usr/bin/env bash
# Installs what eexit needs on Debian 12 (as root, or with sudo), skipping what is there.
#   bash scripts/install-deps.sh           the build/run set: compiler, CMake, Boost, OpenBLAS,
#                                          nlohmann-json (what scripts/demo.sh needs)
#   bash scripts/install-deps.sh --tests   also the test set: doctest, python3-torch and
#                                          python3-numpy (reference computations and fixtures),
#                                          python3-matplotlib (benchmark plot), nodejs (the
#                                          server's end-to-end client tests), haproxy and
#                                          curl (the replica test, docs/DEPLOY.md)
set -euo pipefail
pkgs=(g++ cmake make ninja-build libboost-dev libopenblas-dev nlohmann-json3-dev)
case "${1:-}" in
  "") ;;
  --tests) pkgs+=(doctest-dev python3-torch python3-numpy python3-matplotlib nodejs haproxy curl) ;;
  *) echo "usage: install-deps.sh [--tests]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "[eexit] installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
