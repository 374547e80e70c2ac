#!/usr/bin/env bash
# Runs every benchmark program of a build: ./bench/run.sh <build dir>
# Each <build>/bench/bench_* executable prints RESULT lines (see ../shared/bench/WORKLOAD.md);
# new benchmarks join automatically. Exits non-zero if any benchmark fails.
# Extra arguments are passed to every benchmark (e.g. N and REPS for bench_w1);
# ESG_BENCH_N, ESG_BENCH_REPS and ESG_BENCH_DIR are read by the benchmarks themselves.
set -u
build=${1:-build}
shift || true
dir="$build/bench"
if [ ! -d "$dir" ]; then
  echo "run.sh: no $dir: build first (make build)" >&2
  exit 2
fi
shopt -s nullglob
found=0 failed=0
for prog in "$dir"/bench_*; do
  [ -f "$prog" ] && [ -x "$prog" ] || continue
  found=$((found + 1))
  echo "== $(basename "$prog")"
  if ! "$prog" "$@"; then
    echo "run.sh: $(basename "$prog") FAILED" >&2
    failed=$((failed + 1))
  fi
done
if [ "$found" -eq 0 ]; then
  echo "run.sh: no benchmark programs in $dir" >&2
  exit 2
fi
[ "$failed" -eq 0 ] || exit 1
