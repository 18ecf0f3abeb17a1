#!/usr/bin/env bash
# THE benchmark command: xadapt against plain PyTorch (as installed, and tuned by hand), side
# by side and interleaved. Installs what is missing (Debian packages: the build tools, Debian's
# python3-torch and numpy, jemalloc for the tuned PyTorch), then hands over to bench/run.py
# (which builds ./build-bench, writes random checkpoints into bench/.cache and measures).
#   bench/run.sh [--quick] [--rounds N] [--workloads a,b] [--json F] [--markdown F] [--check]
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(meson ninja-build pkg-config gcc libopenblas-dev liblua5.4-dev libcjson-dev
      libutf8proc-dev libjpeg62-turbo-dev libpng-dev python3 python3-torch python3-numpy
      libjemalloc2)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
# Debian's interpreter, whatever python3 leads PATH (a pyenv one has no torch)
exec /usr/bin/python3 bench/run.py "$@"
