#!/usr/bin/env bash
# The README's main job. Until the Lua runner lands this shows the engine end to end on what
# needs nothing downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/lua/xadapt ] || tools/setup.sh
build/lua/xadapt --version
