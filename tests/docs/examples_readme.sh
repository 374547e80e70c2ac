#!/usr/bin/env bash
# Every examples/*/ directory has a
# README.md, and the README's first fenced shell block (```sh, shell, bash or console)
# names files that exist. A word of that block is taken for a file when it is a relative
# path with a "/" (a VAR=value word: its value); it is looked up from the top of the
# source tree, or, when it starts with build/, in BUILD_DIR. Stores (*.db) and outputs
# (after -o, --output or >) are made by the commands and are not looked up.
# Usage: tests/docs/examples_readme.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
src=${1:?usage: examples_readme.sh SOURCE_DIR BUILD_DIR} build=${2:?usage: examples_readme.sh SOURCE_DIR BUILD_DIR}
passed=0 failed=0

check() { # examples/NAME -> prints what is wrong, nothing when right
  local rel=$1 readme=$src/$1/README.md block word prev="" named=0 path
  [ -f "$readme" ] || { echo "no README.md"; return; }
  block=$(awk '/^```(sh|shell|bash|console)[[:space:]]*$/ { inb = 1; next }
               inb && /^```/ { exit }
               inb { sub(/(^|[[:space:]])#.*/, ""); print }' "$readme")
  [ -n "$block" ] || { echo "README.md has no fenced shell block (\`\`\`sh)"; return; }
  for word in $(printf '%s\n' "$block" | tr "=\"'" '   '); do
    case $prev in -o|--output|'>'|'>>') prev=$word; continue ;; esac
    prev=$word
    [[ $word =~ ^[A-Za-z0-9_.][A-Za-z0-9_.+-]*(/[A-Za-z0-9_.+-]*)+$ ]] || continue
    [[ $word == *.db ]] && continue
    named=$((named + 1))
    case $word in build/*) path=$build/${word#build/} ;; *) path=$src/$word ;; esac
    [ -e "$path" ] || echo "its first shell block names $word, which does not exist ($path)"
  done
  [ "$named" -gt 0 ] || echo "its first shell block names no file of the tree"
}

for dir in "$src"/examples/*/; do
  name=$(basename "$dir")
  problems=$(check "examples/$name")
  if [ -z "$problems" ]; then
    echo "ok   examples/$name/README.md"
    passed=$((passed + 1))
  else
    printf '%s\n' "$problems" | sed "s|^|FAIL examples/$name: |"
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
