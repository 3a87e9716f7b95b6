#!/bin/sh
# Build the example agents in runtime/examples/*/main.c (which may include
# ../mercato.h, the host functions) into their committed
# .wasm files, reproducibly: the same sources and toolchain give the same bytes.
#
# Toolchain (Debian 12): apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32
# Usage: scripts/build_examples.sh [OUT_DIR]   (default: next to each source)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-}
for dir in "$root"/runtime/examples/*/; do
    name=$(basename "$dir")
    target=${out:+$out/$name.wasm}
    target=${target:-$dir$name.wasm}
    # -ffile-prefix-map and --strip-all keep paths, names and the producer out of the
    # module, so the bytes depend on the sources and the toolchain version alone.
    clang --target=wasm32-wasi --sysroot=/usr -O2 \
        -ffile-prefix-map="$root"=. \
        -Wl,--strip-all -Wl,-z,stack-size=65536 \
        -o "$target" "$dir/main.c"
    echo "built $target ($(wc -c < "$target") bytes)"
done
