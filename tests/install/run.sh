#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds and runs a consumer with the
# exported CMake package (shared and static) and with pkg-config.
set -euo pipefail
build=$1 src=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/consumer" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/consumer/consumer_shared"
"$tmp/consumer/consumer_static"
pc="$tmp/prefix/lib/pkgconfig"
sed -i "s|^prefix=.*|prefix=$tmp/prefix|" "$pc/esg.pc"
cc "$src/consumer.c" -o "$tmp/consumer_pc" $(PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs esg)
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/consumer_pc"
echo "1 passed, 0 failed"
