#!/usr/bin/env bash
# Runs every benchmark program of a build: ./bench/run.sh <build dir>   (make bench)
# Each <build>/bench/bench_* executable prints RESULT lines (see ../shared/bench/WORKLOAD.md),
# so a new benchmark joins automatically. Settings go through the environment
# (bench_w1: ESG_BENCH_N, ESG_BENCH_REPS, ESG_BENCH_DIR, ESG_BENCH_ONLY, ESG_BENCH_STRICT).
# Exits non-zero if any benchmark fails (or none is found).
set -u
build=${1:-build}
dir="$build/bench"
if [ ! -d "$dir" ]; then
  echo "run.sh: no $dir: build first (make build)" >&2
  exit 2
fi
found=0
failed=()
for prog in "$dir"/bench_*; do
  [ -f "$prog" ] && [ -x "$prog" ] || continue
  found=$((found + 1))
  name=$(basename "$prog")
  echo "== $name"
  "$prog"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "run.sh: $name FAILED (exit $rc)" >&2
    failed+=("$name")
  fi
done
if [ "$found" -eq 0 ]; then
  echo "run.sh: no benchmark programs in $dir" >&2
  exit 2
fi
if [ "${#failed[@]}" -ne 0 ]; then
  echo "run.sh: failed: ${failed[*]}" >&2
  exit 1
fi
