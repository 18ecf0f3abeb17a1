#!/bin/sh
# Fuzz the file parsers: build the libFuzzer harnesses with clang in build-fuzz/ and run each for
# N seconds (default 60; `tools/fuzz.sh 600` for ten minutes each), all of them or those named:
#   tools/fuzz.sh [SECONDS] [safetensors] [tokenizer] [data] [config] [image]
# safetensors: the safetensors reader; tokenizer: the tokenizer loaders (tokenizer.json,
# vocab.txt, vocab.json + merges.txt) with encode and decode behind them; data: the Lua API's
# JSONL and delimited-text readers; config: checkpoint directories with a fuzzed config.json
# beside real weights; image: JPEG/PNG decoding and CLIP preprocessing. Harness NAME starts from
# the committed seeds in tests/fuzz/corpus_NAME (only read) with tests/fuzz/NAME.dict; inputs
# the fuzzer finds interesting go to build-fuzz/corpus-NAME, crashes and leaks to
# build-fuzz/findings/. Exit status is non-zero when any harness has a finding.
set -eu
secs=60
case ${1:-} in
[0-9]*) secs=$1; shift ;;
esac
targets=${*:-safetensors tokenizer data config image}
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
cd "$root"
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true -Dtests=false
fi
status=0
for t in $targets; do
    if [ ! -f "tests/fuzz/fuzz_$t.c" ]; then
        echo "fuzz.sh: unknown harness '$t' (safetensors, tokenizer, data, config, image)" >&2
        exit 2
    fi
    ninja -C build-fuzz "tests/fuzz/fuzz_$t"
    mkdir -p "build-fuzz/corpus-$t" build-fuzz/findings
    echo "fuzz.sh: $t for ${secs}s" >&2
    "./build-fuzz/tests/fuzz/fuzz_$t" -max_total_time="$secs" -max_len=4096 -timeout=10 \
        -dict="tests/fuzz/$t.dict" -artifact_prefix="build-fuzz/findings/$t-" \
        -print_final_stats=1 "build-fuzz/corpus-$t" "tests/fuzz/corpus_$t" || status=1
done
exit $status
