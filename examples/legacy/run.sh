#!/usr/bin/env bash
# Resync of slow legacy data, end to end: a snapshot diff of full listings, then
# a cursor job over a paged API, each run twice on one store.
# Usage: examples/legacy/run.sh [BUILD_DIR]   (default: build)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-build}
[[ $build = /* ]] || build=$(cd "$here/../.." && cd "$build" 2>/dev/null && pwd || echo "$here/../../$build")
esg=$build/bindings/lua/esg
[[ -x $esg ]] || { echo "legacy: $esg not found; build first" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/esg-legacy.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
db=$tmp/legacy.db
run() { "$esg" run "$here/$1" --db "$db" --no-progress 2>&1; }

echo "== listing 1 (5 customers): all created"
LISTING=$here/listing-1.jsonl run snapshot.lua | tee "$tmp/out1"
echo "== listing 1 again: nothing changed, nothing emitted"
LISTING=$here/listing-1.jsonl run snapshot.lua | tee "$tmp/out2"
echo "== listing 2: one updated, one gone, one new"
LISTING=$here/listing-2.jsonl run snapshot.lua | tee "$tmp/out3"
echo "== the paged invoices API, from the start"
PAGES=$here/pages.json run cursor.lua | tee "$tmp/out4"
echo "== again: resumes after the stored cursor, nothing new"
PAGES=$here/pages.json run cursor.lua | tee "$tmp/out5"
grep -q 'listing: created 5, updated 0, deleted 0, unchanged 0' "$tmp/out1" &&
grep -q 'listing: created 0, updated 0, deleted 0, unchanged 5' "$tmp/out2" &&
grep -q 'listing: created 1, updated 1, deleted 1, unchanged 3' "$tmp/out3" &&
grep -q 'delivered *3$' "$tmp/out4" && grep -q 'received in' "$tmp/out5" && ! grep -q 'delivered *[1-9]' "$tmp/out5" ||
  { echo "legacy: unexpected outcome" >&2; exit 1; }
