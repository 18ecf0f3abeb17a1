#!/usr/bin/env bash
# Check that an installed xadapt is enough to build and use an out-of-tree plugin: install xadapt
# into a temporary prefix, build plugins/example with its own Makefile against the installed
# headers (pkg-config xadapt, --cflags only), then list it with the installed `xadapt plugins`.
#
#   tools/example-plugin-check.sh                    configure, build and install a fresh tree
#                                                     with --prefix in a temporary directory
#   tools/example-plugin-check.sh --build-dir DIR    install the already built DIR with
#                                                     `meson install --destdir` (meson test)
#
# Exits 0 when the example's class is listed as loaded, 77 (skip) when make, pkg-config or a C
# compiler is missing, 1 otherwise. Everything happens in a temporary directory, removed at exit
# unless KEEP=1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=""
case "${1:-}" in
    --build-dir) build_dir=$(cd "${2:?--build-dir needs a directory}" && pwd) ;;
    "") ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--build-dir DIR]" >&2; exit 2 ;;
esac

for tool in make pkg-config meson "${CC:-cc}"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "example-plugin-check: skipped: '$tool' not found" >&2
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/xadapt-example-XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "example-plugin-check: keeping $tmp" >&2
else
    trap 'rm -rf "$tmp"' EXIT
fi
fail() { echo "example-plugin-check: FAIL: $*" >&2; exit 1; }
log="$tmp/log"

if [ -z "$build_dir" ]; then
    # A fresh tree: also proves the compiled-in install directory is where plugins get installed.
    root="$tmp/prefix"
    meson setup "$tmp/build" "$here" --prefix="$root" -Dtests=false >"$log" 2>&1 ||
        { cat "$log" >&2; fail "meson setup"; }
    ninja -C "$tmp/build" >"$log" 2>&1 || { cat "$log" >&2; fail "build"; }
    meson install -C "$tmp/build" --no-rebuild >"$log" 2>&1 || { cat "$log" >&2; fail "install"; }
    # The build tree is also on the installed binary's search path; without it the installed
    # xadapt must find the shipped adapters in the install directory alone.
    rm -rf "$tmp/build"
    sysroot=""
else
    # meson test: reuse the build, installed under a DESTDIR. The .pc file then names the
    # configured prefix; PKG_CONFIG_SYSROOT_DIR points its -I flags into the DESTDIR.
    # `meson test` builds only what the tests depend on: bring the rest of what gets installed
    # up to date first (normally nothing to do).
    root="$tmp/dest"
    ninja -C "$build_dir" >"$log" 2>&1 || { cat "$log" >&2; fail "build $build_dir"; }
    meson install -C "$build_dir" --no-rebuild --destdir "$root" >"$log" 2>&1 ||
        { cat "$log" >&2; fail "meson install --destdir"; }
    sysroot="$root"
fi

pc=$(find "$root" -name xadapt.pc -path '*/pkgconfig/*' | head -n 1)
exe=$(find "$root" -path '*/bin/xadapt' -type f | head -n 1)
[ -n "$pc" ] || fail "no xadapt.pc installed under $root"
[ -n "$exe" ] || fail "no bin/xadapt installed under $root"
libdir=$(dirname "$(dirname "$pc")")
[ -e "$libdir/libxadapt.so" ] || fail "libxadapt.so is not next to pkgconfig/ in $libdir"
header=$(find "$root" -path '*/include/xadapt/plugin.h' | head -n 1)
[ -n "$header" ] || fail "xadapt/plugin.h is not installed under include/"
[ -d "$libdir/xadapt/plugins" ] || fail "no $libdir/xadapt/plugins (the shipped adapters)"

# Build the example out of tree: a copy, so the source tree stays clean.
cp -r "$here/plugins/example" "$tmp/example"
rm -f "$tmp/example/example.so"
export PKG_CONFIG_PATH="$(dirname "$pc")"
export PKG_CONFIG_SYSROOT_DIR="$sysroot"
cflags=$(pkg-config --cflags xadapt) || fail "pkg-config --cflags xadapt"
case "$cflags" in
    *"$(dirname "$(dirname "$header")")"*) ;;
    *) fail "pkg-config --cflags xadapt gives '$cflags', not the include dir of $header" ;;
esac
# CFLAGS through the environment (the Makefile appends to it; a command-line CFLAGS would
# replace its pkg-config flags); LDFLAGS unset so no sanitizer flags leak into the plugin.
env -u LDFLAGS CFLAGS="-O2 -Wall -Wextra -Werror" make -C "$tmp/example" >"$log" 2>&1 || { cat "$log" >&2; fail "make in plugins/example"; }
[ -f "$tmp/example/example.so" ] || fail "make did not produce example.so"
undefined=$(nm -D --undefined-only "$tmp/example/example.so")
if printf '%s\n' "$undefined" | grep ' xa_' >/dev/null; then
    fail "example.so needs xa_* symbols from libxadapt: $(nm -D --undefined-only "$tmp/example/example.so" | grep ' xa_')"
fi
exported=$(nm -D --defined-only "$tmp/example/example.so" | awk '$2 ~ /[TDB]/ {print $3}')
[ "$exported" = "xa_plugin_init" ] || fail "example.so exports more than xa_plugin_init: $exported"

# The installed xadapt finds it through XADAPT_PLUGIN_PATH.
out=$(LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      XADAPT_PLUGIN_PATH="$tmp/example" "$exe" plugins 2>&1) ||
    { echo "$out" >&2; fail "the installed xadapt plugins exited non-zero"; }
printf '%s\n' "$out" | grep -x "$tmp/example/example.so" >/dev/null ||
    { echo "$out" >&2; fail "example.so is not listed as loaded"; }
printf '%s\n' "$out" | grep '^    class ia3: ' >/dev/null ||
    { echo "$out" >&2; fail "class ia3 is not listed"; }
if printf '%s\n' "$out" | grep "example.so: " >/dev/null; then
    echo "$out" >&2; fail "example.so was refused"
fi
if [ -z "$build_dir" ]; then
    printf '%s\n' "$out" | grep -x "$libdir/xadapt/plugins/bottleneck.so" >/dev/null ||
        { echo "$out" >&2; fail "the installed adapters are not found in $libdir/xadapt/plugins"; }
fi

# The out-of-tree gradient check: gradcheck links the installed libxadapt and compares ia3's
# gradients with central differences on a tiny random BERT made by the installed xadapt. A
# sanitizer build's library needs the ASan runtime loaded first into this uninstrumented program.
preload=""
libs=$(ldd "$libdir/libxadapt.so" 2>/dev/null || true) # not piped into grep -q: under pipefail
case "$libs" in                                       # ldd's SIGPIPE would fail the test
    *libasan*) preload=$("${CC:-cc}" -print-file-name=libasan.so) ;;
esac
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$exe" make-random --arch bert-tiny --out "$tmp/bert" >"$log" 2>&1 ||
    { cat "$log" >&2; fail "xadapt make-random"; }
# `make check MODEL=... OPTIONS=...` does the same; here the program runs alone, so that only it
# gets the preloaded runtime (not make and the compiler).
env -u LDFLAGS CFLAGS="-O2 -Wall -Wextra -Werror" make -C "$tmp/example" gradcheck >"$log" 2>&1 ||
    { cat "$log" >&2; fail "make gradcheck"; }
(cd "$tmp/example" &&
    env LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        XADAPT_PLUGIN_PATH="$tmp/example" ${preload:+LD_PRELOAD="$preload"} \
        ./gradcheck "$tmp/bert" ia3 '{"layers": [0, 1]}') >"$log" 2>&1 ||
    { cat "$log" >&2; fail "the example's gradient check"; }
grep -q "^gradcheck ia3: .* 0 off" "$log" || { cat "$log" >&2; fail "gradcheck output"; }
echo "example-plugin-check: ok: $exe lists class ia3 from an example.so built against $pc;" \
     "$(grep '^gradcheck ia3' "$log")"
