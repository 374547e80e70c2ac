#!/usr/bin/env bash
# Runs every benchmark of a build: ./bench/run.sh <build dir>   (make bench)
# The C programs, then W1 through the Lua gateway and the Python package.
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
# W1 through the bindings, each with the C API measured in the same run.
run_binding() { # name, command...
  local name=$1
  shift
  found=$((found + 1))
  echo "== $name"
  "$@" || { echo "run.sh: $name FAILED" >&2; failed+=("$name"); }
}
n=${ESG_BENCH_N:-100000}
if [ -x "$build/bindings/lua/esg" ]; then
  run_binding bench_w1.lua "$build/bindings/lua/esg" lua "$(dirname "$0")/bench_w1.lua" "$n" "${ESG_BENCH_REPS:-3}"
fi
if [ -d "$build/bindings/python/pkg" ]; then
  run_binding bench_w1.py env PYTHONPATH="$build/bindings/python/pkg" "${PYTHON:-/usr/bin/python3}" \
    "$(dirname "$0")/bench_w1.py" --n "$n" --runs "${ESG_BENCH_REPS:-3}" --c-bench "$build/bench/bench_w1"
fi
if [ "$found" -eq 0 ]; then
  echo "run.sh: no benchmark programs in $dir" >&2
  exit 2
fi
if [ "${#failed[@]}" -ne 0 ]; then
  echo "run.sh: failed: ${failed[*]}" >&2
  exit 1
fi
