#!/bin/sh
# Fuzz the safetensors reader: build the libFuzzer harness with clang in build-fuzz/ and run it for
# N seconds (default 60; `tools/fuzz.sh 600` for ten minutes). Committed seeds in tests/fuzz/corpus
# are only read; inputs the fuzzer finds interesting go to build-fuzz/corpus, crashes and leaks to
# build-fuzz/findings/. Exit status is non-zero when there is a finding.
set -eu
secs=${1:-60}
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
cd "$root"
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true -Dtests=false
fi
ninja -C build-fuzz tests/fuzz/fuzz_safetensors
mkdir -p build-fuzz/corpus build-fuzz/findings
exec ./build-fuzz/tests/fuzz/fuzz_safetensors -max_total_time="$secs" -max_len=4096 -timeout=10 \
    -dict=tests/fuzz/safetensors.dict -artifact_prefix=build-fuzz/findings/ -print_final_stats=1 \
    build-fuzz/corpus tests/fuzz/corpus
