#!/usr/bin/env bash
# The CRM example end to end: starts the mock CRM (examples/crm/mock_crm.py, on
# 127.0.0.1 at a free port), runs the gateway over the sample events on a fresh
# store, shows what the CRM received and the fault, runs it again to show every
# event recognised as a duplicate (nothing sent), and stops the mock.
# Usage: examples/crm/run.sh [BUILD_DIR]   (default: build)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-build}
[[ $build = /* ]] || build=$(cd "$here/../.." && cd "$build" 2>/dev/null && pwd || echo "$here/../../$build")
esg=$build/bindings/lua/esg
if [[ ! -x $esg ]]; then
  echo "crm: $esg not found; build first (make build)" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/esg-crm.XXXXXX")
python3 "$here/mock_crm.py" --port-file "$tmp/port" --log "$tmp/crm.log" &
mock=$!
trap 'kill $mock 2>/dev/null || true; wait $mock 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do [[ -s $tmp/port ]] && break; sleep 0.05; done
[[ -s $tmp/port ]] || { echo "crm: the mock CRM did not start" >&2; exit 2; }
export CRM_URL=http://127.0.0.1:$(cat "$tmp/port")

crm_stats() {
  python3 -c 'import json,sys,urllib.request
s = json.load(urllib.request.urlopen(sys.argv[1] + "/stats"))
print("mock CRM: %(requests)d requests, %(deals)d deals created, %(refused)d refused, %(duplicates)d duplicates answered" % s)' "$CRM_URL"
}

db=$tmp/crm.db
script=$here/gateway.lua
events=$here/events.jsonl
# Runs the gateway over the sample events (exit status 1 when it records faults).
run_gateway() { "$esg" run "$script" -i "$events" --db "$db" --no-progress 2>&1; }
echo "== esg demo: crm/gateway.lua over $(wc -l <"$events") events -> the mock CRM at $CRM_URL"
echo
echo "== run 1: a fresh store"
rc1=0; run_gateway || rc1=$?
echo "(exit status $rc1: 1 means faults were recorded)"
echo "== what the mock CRM answered (in arrival order):"
python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print("  %-8s %-5s %s  %s" % (r["key"], r["deal"], r["status"], r["contact"] or "(no contact: unknown customer)"))' "$tmp/crm.log"
crm_stats
echo
echo "== the fault record, kept in the store (esg faults list):"
"$esg" faults list --db "$db" 2>&1
echo
echo "== run 2: the same events again; every one is a duplicate, nothing is sent:"
rc2=0; run_gateway || rc2=$?
echo "(exit status $rc2)"
crm_stats
requests=$(grep -c . "$tmp/crm.log")
if [[ $rc1 -ne 1 || $rc2 -ne 0 ]]; then
  echo "crm: unexpected exit statuses $rc1 and $rc2" >&2
  exit 1
fi
echo
echo "(the CRM saw $requests requests in all: run 2 sent none)"
