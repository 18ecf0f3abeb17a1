#!/usr/bin/env bash
# Build and run the whole test suite; `--sanitize` does it under ASan+UBSan in ./build-asan.
# Warnings are errors here. Ends with one line: "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

dir=build-test
opts=(-Dwerror_ci=true)
if [ "${1:-}" = "--sanitize" ]; then
    dir=build-asan
    opts+=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized)
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_odr_violation=0
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp
fi
if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "${opts[@]}" >/dev/null || exit 1
fi
ninja -C "$dir" || exit 1
meson test -C "$dir" --print-errorlogs --num-processes 2
rc=$?
# Criterion prints one "Synthesis" line per test binary; add them up for the closing line.
log="$dir/meson-logs/testlog.txt"
read -r passed failed < <(grep -ao 'Tested: [0-9]* | Passing: [0-9]* | Failing: [0-9]* | Crashing: [0-9]*' "$log" |
    awk -F'[:|] *' '{p += $4; f += $6 + $8} END {print p + 0, f + 0}')
[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1 # a binary that died before its synthesis
echo "tests: $passed passed, $failed failed" | tee "$dir/summary.txt"
exit $rc
