#!/usr/bin/env bash
# The quick start stays quiet and minimal (#15 item 7): make demo installs only the build's
# Debian packages (no benchmark, valgrind or test packages), make build shows a short
# progress with cmake's output in BUILD/build.log, and the README's quick start has its
# two commands. Usage: tests/docs/quick_start.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
src=$1 build=$2
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }
cd "$src"
# what each target would install: make -pn prints the variables as make sees them
vars=$(make -pn -f Makefile deps 2>/dev/null)
deb=$(grep -E '^DEB_PACKAGES :?= ' <<<"$vars" | head -1)
[ -n "$deb" ] && ok "DEB_PACKAGES is set" || bad "no DEB_PACKAGES in the Makefile"
for p in nginx wrk valgrind python3-pytest clang; do
  grep -qw -- "$p" <<<"$deb" && bad "make demo would install $p" || ok "make demo does not install $p"
done
for tp in bench:nginx valgrind:valgrind test:python3-pytest; do
  t=${tp%%:*} p=${tp#*:}
  plan=$(make -n "$t" BUILD="$build" 2>/dev/null)
  grep -q "dpkg-query.*$p\|$p.*dpkg-query" <<<"$plan" && ok "make $t installs its own packages ($p)" ||
    bad "make $t does not install $p"
done
grep -qE '^demo: build$' Makefile && ok "demo depends on build only" || bad "demo: more than build"
# a build that has nothing to do prints a few lines and names its log
out=$(scripts/quiet-build.sh "$build" 1 2>&1) || bad "quiet-build.sh failed: $out"
n=$(wc -l <<<"$out")
[ "$n" -le 12 ] && ok "make build prints $n lines" || bad "make build printed $n lines"
grep -q "build.log" <<<"$out" && [ -s "$build/build.log" ] && ok "cmake's output is in $build/build.log" ||
  bad "no build log named"
! grep -q "Entering directory" <<<"$out" && ok "no 'Entering directory' lines" || bad "make's noise shown"
# the README's quick start: exactly make demo and make test
qs=$(awk '/^## Quick start/ { on = 1; next } on && /^## / { exit } on' README.md | grep -E '^    make ' | awk '{print $2}')
[ "$(tr '\n' ' ' <<<"$qs")" = "demo test " ] && ok "README's quick start: make demo, make test" ||
  bad "README's quick start has: $qs"
exit $fail
