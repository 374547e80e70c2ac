#!/usr/bin/env bash
# Two-way sync with latching, end to end: a shop and a CRM (system.lua stands in
# for both: applying a write makes the system report it back as a change) and
# two gateways sharing one store. Genuine changes cross once; every echo stops.
# Usage: examples/twoway/run.sh [BUILD_DIR]   (default: build)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-build}
[[ $build = /* ]] || build=$(cd "$here/../.." && cd "$build" 2>/dev/null && pwd || echo "$here/../../$build")
esg=$build/bindings/lua/esg
[[ -x $esg ]] || { echo "twoway: $esg not found; build first" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/esg-twoway.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
db=$tmp/sync.db
sys() { "$esg" lua "$here/system.lua" "$@"; }
run() { "$esg" run "$here/$1" -i "$2" -o "$3" --db "$db" --no-progress 2>&1 | grep -v '^  \(stale\|faults\|duplicates\) '; }
count() { grep -c . "$1" 2>/dev/null || true; }

echo "== 1. users edit two contacts in the shop"
sys edit shop "$tmp/shop.json" "$tmp/shop-feed-1.jsonl" c-1 name "Ada Lovelace"
sys edit shop "$tmp/shop.json" "$tmp/shop-feed-1.jsonl" c-2 name "Grace Hopper"
echo "== 2. shop -> crm: both are genuine and go to the CRM (latched on the way out)"
run shop_to_crm.lua "$tmp/shop-feed-1.jsonl" "$tmp/crm-inbox-1.jsonl"
sys apply crm "$tmp/crm.json" "$tmp/crm-inbox-1.jsonl" "$tmp/crm-feed-1.jsonl"
echo "== 3. meanwhile a CRM user changes c-1's email"
sys edit crm "$tmp/crm.json" "$tmp/crm-feed-1.jsonl" c-1 email "ada@crm.example"
echo "== 4. crm -> shop: the two echoes stop; the genuine edit crosses"
run crm_to_shop.lua "$tmp/crm-feed-1.jsonl" "$tmp/shop-inbox-1.jsonl"
sys apply shop "$tmp/shop.json" "$tmp/shop-inbox-1.jsonl" "$tmp/shop-feed-2.jsonl"
echo "== 5. shop -> crm: the shop's echo of that edit stops too; nothing is left to send"
run shop_to_crm.lua "$tmp/shop-feed-2.jsonl" "$tmp/crm-inbox-2.jsonl"
echo
sent1=$(count "$tmp/crm-inbox-1.jsonl"); back=$(count "$tmp/shop-inbox-1.jsonl"); sent2=$(count "$tmp/crm-inbox-2.jsonl")
echo "writes: shop->crm $sent1, crm->shop $back, then shop->crm $sent2 (the loop ended)"
same=$(python3 -c 'import json,sys; a,b=(json.load(open(p))["contacts"] for p in sys.argv[1:]); print("yes" if a==b else "no")' "$tmp/shop.json" "$tmp/crm.json")
echo "shop and CRM hold the same contacts: $same"
[[ $sent1 -eq 2 && $back -eq 1 && $sent2 -eq 0 && $same == yes ]] || { echo "twoway: unexpected outcome" >&2; exit 1; }
