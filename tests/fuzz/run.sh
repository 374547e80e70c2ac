#!/usr/bin/env bash
# Runs each libFuzzer target of a fuzz build for a while (make fuzz; tests/README.md "Fuzzing").
#   tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]      (default: every fuzz_* in BUILD_DIR/tests/fuzz)
# One target at a time, one process each. A target starts from its committed seeds
# (corpus/<name>/), its regressions and the inputs earlier runs found (BUILD_DIR/fuzz-corpus/
# <name>/, where new ones are written: the committed corpus is left as it is). A finding
# (a crash, a sanitizer report, a broken invariant, a timeout, running out of memory) is
# copied into regressions/<name>/, where ctest replays it from then on, and fails the run.
# Prints, per target, the executions, the seconds and the corpus size.
set -uo pipefail
build=${1:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}
seconds=${2:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
bin=$build/tests/fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$bin"/fuzz_*; do
    n=$(basename "$f")
    case $n in fuzz_replay_*) continue ;; esac
    [ -x "$f" ] && targets+=("${n#fuzz_}")
  done
fi
[ ${#targets[@]} -gt 0 ] || { echo "run.sh: no fuzz targets in $bin (build with ESG_FUZZ=ON)" >&2; exit 2; }

dict_of() {
  case $1 in
    retry_after) echo "$here/retry_after.dict" ;;
    webhook) echo "$here/webhook.dict" ;;
    *) echo "$here/json.dict" ;;
  esac
}

fail=0
summary=()
for t in "${targets[@]}"; do
  exe=$bin/fuzz_$t
  [ -x "$exe" ] || { echo "run.sh: no $exe" >&2; fail=1; continue; }
  work=$build/fuzz-corpus/$t
  art=$build/fuzz-artifacts/$t
  log=$build/fuzz-logs/$t.log
  mkdir -p "$work" "$art" "$(dirname "$log")"
  seeds=("$here/corpus/$t")
  [ -d "$here/regressions/$t" ] && seeds+=("$here/regressions/$t")
  echo "== fuzz $t for ${seconds}s"
  # leaks: a target keeps its store or Lua state for the whole run, on purpose (reachable).
  "$exe" "$work" "${seeds[@]}" -dict="$(dict_of "$t")" -max_total_time="$seconds" -timeout=25 \
    -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 -artifact_prefix="$art/" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\).*corp: \([0-9]*\).*/cov \1, corpus \2/p')
  line="$t: ${execs:-?} executions in ${secs:-$seconds} s${cov:+, $cov}"
  if [ $rc -ne 0 ]; then
    fail=1
    line="$line: FINDING (exit $rc, log $log)"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|fuzz invariant failed|.*runtime error)' "$log" | head -5
    mkdir -p "$here/regressions/$t"
    for a in "$art"/*; do
      [ -f "$a" ] || continue
      cp "$a" "$here/regressions/$t/" && echo "kept as a regression input: tests/fuzz/regressions/$t/$(basename "$a")"
      line="$line, kept tests/fuzz/regressions/$t/$(basename "$a")"
      rm -f "$a"
    done
  fi
  echo "$line"
  summary+=("$line")
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit $fail
