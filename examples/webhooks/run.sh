#!/usr/bin/env bash
# Webhook ingress end to end: signs sample deliveries (with a redelivery, a forged
# and a stale one), runs the gateway twice, lists the internal events and faults.
# Usage: examples/webhooks/run.sh [BUILD_DIR]   (default: build)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-build}
[[ $build = /* ]] || build=$(cd "$here/../.." && cd "$build" 2>/dev/null && pwd || echo "$here/../../$build")
esg=$build/bindings/lua/esg
[[ -x $esg ]] || { echo "webhooks: $esg not found; build first" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/esg-webhooks.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
db=$tmp/webhooks.db
export WEBHOOK_SECRET=$("$esg" webhook secret)
"$esg" lua "$here/deliveries.lua" "$WEBHOOK_SECRET" "$here/payloads.jsonl" >"$tmp/deliveries.jsonl"
echo "== $(wc -l <"$tmp/deliveries.jsonl") deliveries received: 3 webhooks, a redelivery, a forged and a stale one"
set +e
"$esg" run "$here/gateway.lua" -i "$tmp/deliveries.jsonl" --db "$db" --no-progress 2>&1 | tee "$tmp/run1"
rc1=${PIPESTATUS[0]}
echo "== the internal events, in the event log under their order (o-1, o-2):"
"$esg" events o-1 --db "$db" 2>&1; "$esg" events o-2 --db "$db" 2>&1
echo "== again: every delivery already handled"
"$esg" run "$here/gateway.lua" -i "$tmp/deliveries.jsonl" --db "$db" --no-progress 2>&1 | tee "$tmp/run2"
rc2=${PIPESTATUS[0]}
set -e
grep -q 'delivered *3$' "$tmp/run1" && grep -q 'duplicates *1$' "$tmp/run1" && grep -q 'faults *2$' "$tmp/run1" &&
  grep -q 'duplicates *6$' "$tmp/run2" && [[ $rc1 -eq 1 && $rc2 -eq 0 ]] ||
  { echo "webhooks: unexpected outcome" >&2; exit 1; }
