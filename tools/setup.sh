#!/usr/bin/env bash
# Install what xadapt needs to build and test (Debian/Ubuntu packages), then configure ./build.
# Safe to re-run: apt-get runs only when a package is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(meson ninja-build pkg-config gcc clang libclang-rt-14-dev python3
      libopenblas-dev liblua5.4-dev lua5.4 libcjson-dev libcriterion-dev libutf8proc-dev
      libjpeg62-turbo-dev libpng-dev zlib1g-dev)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f build/build.ninja ]; then
    meson setup build >/dev/null
fi
ninja -C build >/dev/null
echo "setup: built $(build/lua/xadapt --version | head -1) in ./build"
