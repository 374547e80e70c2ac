#!/usr/bin/env bash
# The C example's test: run it twice on a fresh store; the second run writes nothing.
set -euo pipefail
prog=$1 events=$2 dir=$3
db="$dir/orders-c-test.db"
rm -f "$db" "$db-wal" "$db-shm"
"$prog" "$events" "$db" >"$dir/run1.out" 2>"$dir/run1.err"
"$prog" "$events" "$db" >"$dir/run2.out" 2>"$dir/run2.err"
cat "$dir/run1.err" "$dir/run2.err"
grep -q '"dealId":"o-1"' "$dir/run1.out" || { echo "run 1 delivered no deal for o-1"; exit 1; }
[ ! -s "$dir/run2.out" ] || { echo "run 2 wrote output again:"; cat "$dir/run2.out"; exit 1; }
grep -q ' 0 delivered' "$dir/run2.err" || { echo "run 2 delivered something"; exit 1; }
