#!/usr/bin/env bash
# The demo (make demo): runs examples/orders end to end on a fresh store in a
# temporary directory, then runs it again to show every event recognised as a
# duplicate. Usage: examples/demo.sh [BUILD_DIR]   (default: build)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-build}
[[ $build = /* ]] || build=$(cd "$here/.." && cd "$build" 2>/dev/null && pwd || echo "$here/../$build")
esg=$build/bindings/lua/esg
if [[ ! -x $esg ]]; then
  echo "demo: $esg not found; build first (make build)" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/esg-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
db=$tmp/orders.db
script=$here/orders/gateway.lua
events=$here/orders/events.jsonl

echo "== esg demo: $(basename "$(dirname "$script")")/$(basename "$script") over $(wc -l <"$events") events, store $db"
echo
echo "== run 1: a fresh store. Deal records (the sink, stdout):"
set +e
"$esg" run "$script" -i "$events" --db "$db" --no-progress 2>&1
rc1=$?
set -e
echo "(exit status $rc1: 1 means faults were recorded)"
echo
echo "== the fault record, kept in the store:"
"$esg" faults list --db "$db"
echo
echo "== run 2: the same events again; every one is a duplicate, nothing is delivered:"
set +e
"$esg" run "$script" -i "$events" --db "$db" --no-progress 2>&1
rc2=$?
set -e
echo "(exit status $rc2)"
echo
"$esg" stats --db "$db"
if [[ $rc1 -ne 1 || $rc2 -ne 0 ]]; then
  echo "demo: unexpected exit statuses $rc1 and $rc2" >&2
  exit 1
fi
