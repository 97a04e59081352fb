#!/usr/bin/env bash
# Installs what eexit needs on Debian 12 (as root, or with sudo), skipping what is there.
set -euo pipefail
pkgs=(g++ cmake make ninja-build doctest-dev libboost-dev libopenblas-dev nlohmann-json3-dev
      python3-torch python3-numpy python3-matplotlib nodejs)
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
