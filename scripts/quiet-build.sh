#!/bin/sh
# make build: configure (once) and build quietly. The output of cmake goes to
# BUILD/build.log; the terminal gets one progress line (a line per tenth when stdout
# is not a terminal) and, if the build fails, the log's last lines and its name.
# Usage: scripts/quiet-build.sh BUILD JOBS [cmake configure arguments...]
set -u
build=$1 jobs=$2
shift 2
mkdir -p "$build"
log=$build/build.log
: > "$log"
if [ ! -f "$build/CMakeCache.txt" ]; then
  if ! cmake -S . -B "$build" "$@" >> "$log" 2>&1; then
    tail -n 30 "$log"
    echo "configure failed: the full log is $log" >&2
    exit 1
  fi
fi
tty=0
[ -t 1 ] && tty=1
{ cmake --build "$build" -j "$jobs" 2>&1; echo $? > "$build/build.rc"; } | tee -a "$log" |
  awk -v tty="$tty" '
    /^\[ *[0-9]+%\]/ { p = $0; sub(/^\[ */, "", p); sub(/%.*/, "", p); p += 0
      if (tty) { printf "\rbuilding libesg: %3d%%", p; fflush() }
      else if (int(p / 10) > last) { last = int(p / 10); printf "building libesg: %d%%\n", p; fflush() } }
    END { if (tty) printf "\r" }'
rc=$(cat "$build/build.rc" 2>/dev/null || echo 1)
rm -f "$build/build.rc"
if [ "$rc" != 0 ]; then
  grep -E "error|Error" "$log" | head -n 20
  tail -n 20 "$log"
  echo "build failed: the full log is $log" >&2
  exit "$rc"
fi
echo "built in $build (log: $log)"
