#!/usr/bin/env bash
# Run HERE (the Debian 12 dev machine), before a GPU run: puts everything that
# benchmarks/gpu/check.sh needs beyond the CUDA toolkit, CMake and ninja into one
# git-ignored folder of the repo, which the device tool carries (`carry: [".gpu-carry"]`):
#   root/    the files of the Debian packages the build finds (apt-get download + dpkg -x):
#            nlohmann-json3-dev (eexit::eexit), doctest-dev (the tests). No OpenBLAS: the
#            GPU build configures with -DEEXIT_WITH_BLAS=OFF (BLAS backs only CpuBackend's
#            optional matmul_impl::blas, which no GPU target uses). No Boost: only serve/
#            and the samples include it, and the GPU check builds neither.
#   shared/  copies of the ../shared files the GPU tests read (stories260K); the embedded
#            model is in the repo already.
#   MANIFEST package versions and sizes.
# usage: benchmarks/gpu/prepare.sh [CARRY_DIR]   (default .gpu-carry)
# Env: EEXIT_SHARED_DIR (default ../shared).
set -euo pipefail
cd "$(dirname "$0")/../.."
carry=${1:-.gpu-carry}
shared=${EEXIT_SHARED_DIR:-../shared}
pkgs=(nlohmann-json3-dev doctest-dev)
# The device tool carries at most 64 MiB with the repo itself (about 12 MiB today).
limit_mib=40

fail() {
  echo "prepare.sh: $*" >&2
  exit 1
}

rm -rf "$carry"
mkdir -p "$carry/debs" "$carry/root" "$carry/shared/models/stories260K"
carry=$(cd "$carry" && pwd)

# The packages: from the registry when it answers, else the installed packages' own files
# (the same versions on this machine; dpkg -L lists them).
if (cd "$carry/debs" && apt-get download "${pkgs[@]}") >"$carry/debs/apt.log" 2>&1; then
  for d in "$carry"/debs/*.deb; do dpkg -x "$d" "$carry/root"; done
  how="apt-get download"
else
  echo "prepare.sh: apt-get download failed ($(tail -1 "$carry/debs/apt.log")); copying the installed packages' files" >&2
  for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || fail "$p is neither downloadable nor installed"
    dpkg -L "$p" | while read -r f; do
      [ -f "$f" ] && [ ! -L "$f" ] && cp --parents "$f" "$carry/root"
    done
  done
  how="dpkg -L (installed files)"
fi
rm -rf "$carry/debs" "$carry/root/usr/share/doc"
for f in usr/include/nlohmann/json.hpp usr/include/doctest/doctest.h \
         usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake; do
  [ -f "$carry/root/$f" ] || fail "the packages did not provide $f"
done

# The models the GPU tests read (tests/gpu/*: test::shared("models/stories260K/...")).
for f in stories260K.bin tok512.bin; do
  src="$shared/models/stories260K/$f"
  [ -f "$src" ] || fail "$src is missing (set EEXIT_SHARED_DIR)"
  cp "$src" "$carry/shared/models/stories260K/"
done

{
  echo "# prepared $(date -u +%FT%TZ) on $(uname -m) by benchmarks/gpu/prepare.sh ($how)"
  for p in "${pkgs[@]}"; do echo "$p $(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo '?')"; done
  (cd "$carry" && find . -type f ! -name MANIFEST -printf '%s %p\n' | sort -k2)
} >"$carry/MANIFEST"

kib=$(du -sk "$carry" | cut -f1)
[ "$kib" -le $((limit_mib * 1024)) ] || fail "$carry is $((kib / 1024)) MiB, over $limit_mib MiB"
echo "prepare.sh: $carry ready ($((kib / 1024)).$(((kib % 1024) * 10 / 1024)) MiB, $how)"
