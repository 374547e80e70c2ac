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
# pkg-config as installed: esg.pc finds its prefix from where it lies
pc="$tmp/prefix/lib/pkgconfig"
cc "$src/consumer.c" -o "$tmp/consumer_pc" $(PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs esg)
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/consumer_pc"
# the Lua module, the esg command and the Python package, with the paths docs/c-api.md gives
P="$tmp/prefix"
LD_LIBRARY_PATH="$P/lib" LUA_CPATH="$P/lib/lua/5.4/?.so;;" LUA_PATH="$P/share/lua/5.4/?.lua;;" \
  lua5.4 -e 'local esg = require "esg"; local g = require "esg.gateway"; assert(esg.version and g.run)'
LD_LIBRARY_PATH="$P/lib" "$P/bin/esg" --version >/dev/null
[ -f "$P/share/man/man1/esg.1" ] || { echo "the man page is not installed: $P/share/man/man1/esg.1"; exit 1; }
py=$(ls -d "$P"/lib/python3*/dist-packages 2>/dev/null | head -1)
if [ -n "$py" ] && [ -n "${ESG_PYTHON:-}" ]; then
  LD_LIBRARY_PATH="$P/lib" PYTHONPATH="$py" "$ESG_PYTHON" -c 'import esg; esg.Store(":memory:").close()'
fi
# and staged into DESTDIR, as packagers do: both ways again, from the staged tree
DESTDIR="$tmp/stage" cmake --install "$build" --prefix /opt/esg >/dev/null
staged="$tmp/stage/opt/esg"
cc "$src/consumer.c" -o "$tmp/consumer_stage" $(PKG_CONFIG_PATH="$staged/lib/pkgconfig" pkg-config --cflags --libs esg)
LD_LIBRARY_PATH="$staged/lib" "$tmp/consumer_stage"
cmake -S "$src" -B "$tmp/consumer2" -DCMAKE_PREFIX_PATH="$staged" >/dev/null
cmake --build "$tmp/consumer2" >/dev/null
LD_LIBRARY_PATH="$staged/lib" "$tmp/consumer2/consumer_shared"
echo "1 passed, 0 failed"
