#!/bin/sh
# Regenerate the safetensors fuzzer's seeds, tests/fuzz/corpus_safetensors/: a few tiny valid
# .safetensors files covering every dtype xadapt reads, scalars, empty tensors, rank 5, metadata
# and a misaligned data section. Headers are written by hand (tests/test_safetensors.c checks
# they still load).
set -eu
export LC_ALL=C
out=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)/tests/fuzz/corpus_safetensors
mkdir -p "$out"

# seed NAME HEADER DATA: u64 little-endian header length, the header, then DATA (printf escapes).
seed() {
    n=${#2}
    lo=$(printf '\\%03o\\%03o\\%03o\\%03o' $((n & 255)) $((n >> 8 & 255)) $((n >> 16 & 255)) \
        $((n >> 24 & 255)))
    { printf "$lo\\000\\000\\000\\000"; printf '%s' "$2"; printf "$3"; } >"$out/$1"
}

# e NAME DTYPE SHAPE BEGIN END: one header entry.
e() { printf '"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%s,%s]}' "$@"; }

seed empty-header.safetensors '{}      ' ''

seed f32.safetensors "{\"__metadata__\":{\"format\":\"pt\"},$(e w F32 2,2 0 16)}        " \
    '\000\000\200\077\000\000\000\100\000\000\100\100\000\000\200\100'

h="{$(e i I64 1 0 8),$(e s F32 '' 8 12),$(e e F32 0,4 12 12),$(e b BF16 1 12 14)"
h="$h,$(e h F16 2 14 18),$(e u U8 3 18 21),$(e t BOOL 1 21 22)}       "
seed mixed.safetensors "$h" \
    '\001\000\000\000\000\000\000\000\000\000\040\100\200\077\001\000\000\174\001\002\003\001'

seed rank5-f64.safetensors "{$(e r F64 1,1,1,1,1 0 8),\"__metadata__\":{\"k\":\"v \\u00e9\"}}" \
    '\000\000\000\000\000\000\360\077'

# header length 109: the data section starts 1 byte past a 4-byte boundary
seed misaligned.safetensors "{$(e m F32 1 0 4),$(e n I32 1 4 8)}  " \
    '\000\000\300\177\377\377\377\377'
ls -l "$out"
