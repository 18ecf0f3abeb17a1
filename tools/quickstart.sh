#!/usr/bin/env bash
# The README's main job: build xadapt if needed, then run the Lua quickstart, which needs nothing
# downloaded. It writes a tiny random BERT and CLIP, trains an X-adapter's V-expert on a task
# whose answer is only in the image, and checks that accuracy goes from chance to ~100 % with
# the V-expert on and back to chance with it off. Extra arguments go to the script
# (out=DIR keeps the files there; seed=N, classes=N, epochs=N). XADAPT_BUILD_DIR picks another
# build directory than ./build.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${XADAPT_BUILD_DIR:-build}
if [ ! -x "$dir/lua/xadapt" ]; then
    if [ "$dir" = build ]; then tools/setup.sh; else meson setup "$dir" >/dev/null; fi
fi
ninja -C "$dir" >/dev/null
"$dir/lua/xadapt" --version | head -1
exec "$dir/lua/xadapt" run lua/examples/quickstart.lua "$@"
