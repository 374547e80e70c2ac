#!/usr/bin/env bash
# docs/esg.1 renders without warnings (groff -ww and man --warnings; mandoc -Tlint when
# there is no groff; else only a minimal check, said so), has the sections of a man page,
# and documents the esg command it is installed with: every command that `esg --help`
# lists has a subsection ".SS "esg COMMAND ..."" under COMMANDS, and every option that
# `esg help COMMAND` names appears in that command's subsections (COMMANDS and OPTIONS).
# A new command or option without a man entry fails here.
# Usage: tests/docs/man_page.sh MAN_PAGE ESG_BINARY
set -uo pipefail
page=${1:?usage: man_page.sh MAN_PAGE ESG_BINARY} esg=${2:?usage: man_page.sh MAN_PAGE ESG_BINARY}
passed=0 failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }

# 1. renders cleanly
export LC_ALL=C.UTF-8 MANWIDTH=80 MANPAGER=cat PAGER=cat
if command -v groff >/dev/null; then
  out=$(groff -man -ww -z "$page" 2>&1)
  [ -z "$out" ] && ok "groff -man -ww renders $page without warnings" || fail "groff -man -ww: $out"
  if command -v man >/dev/null; then
    out=$(man --warnings -l "$page" 2>&1 >/dev/null)
    [ -z "$out" ] && ok "man --warnings -l renders it without warnings" || fail "man --warnings -l: $out"
  fi
elif command -v mandoc >/dev/null; then
  out=$(mandoc -Tlint -W warning "$page" 2>&1)
  [ -z "$out" ] && ok "mandoc -Tlint finds no warning" || fail "mandoc -Tlint: $out"
else
  echo "note: neither groff nor mandoc is installed: only a minimal check of the page's form"
  grep -q '^\.TH ESG 1 ' <(head -5 "$page") && ok "starts with .TH ESG 1" || fail "no .TH ESG 1 line near the top"
fi

# the source with roff's escapes for '-', fonts and zero-width spaces taken out
text=$(sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\&//g' -e 's/\\e/\\/g' "$page")

# 2. the sections
for sh in NAME SYNOPSIS DESCRIPTION COMMANDS OPTIONS ENVIRONMENT "EXIT STATUS" FILES EXAMPLES "SEE ALSO"; do
  grep -Eq "^\.SH \"?$sh\"?\$" <<<"$text" && ok "section $sh" || fail "no section $sh"
done
grep -q 'ESG_DB' <<<"$text" && ok "ESG_DB is documented" || fail "ESG_DB is not documented"

# The subsections ".SS "esg CMD ..."" of CMD, under COMMANDS and OPTIONS.
subsections() {
  printf '%s\n' "$text" | awk -v cmd="$1" '
    /^\.SH/ { sh = $0; take = 0; next }
    /^\.SS/ {
      p = ".SS \"esg " cmd; c = substr($0, length(p) + 1, 1)
      take = (index($0, p) == 1 && (c == " " || c == "\"" || c == "")) && (sh ~ /COMMANDS|OPTIONS/)
      if (take) print; next
    }
    take { print }'
}
# The options a help text names: --long ones, and -x ones standing alone.
options_of() {
  local in; in=$(cat)
  printf '%s\n' "$in" | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u
  printf '%s\n' "$in" | grep -oE -- '(^|[][ (|,])-[a-zA-Z]([]),| ]|$)' | grep -oE -- '-[a-zA-Z]' | sort -u
}
has_option() { # TEXT OPTION ("--allow-" from "--allow-*" matches as a prefix)
  case $2 in
    *-) grep -qF -- "$2" <<<"$1" ;;
    *) grep -qE -- "(^|[^A-Za-z0-9-])$2([^A-Za-z0-9-]|\$)" <<<"$1" ;;
  esac
}

# 3. every command of `esg --help`, and its options
main=$("$esg" --help) || { fail "esg --help failed"; main=""; }
commands=$(printf '%s\n' "$main" | awk '/^commands:/ { f = 1; next } f && /^[[:space:]]*$/ { exit } f { print $1 }')
[ -n "$commands" ] && ok "esg --help lists commands: $(echo $commands)" || fail "no commands found in esg --help"
for cmd in $commands; do
  sub=$(subsections "$cmd")
  if ! grep -q '^\.SS' <<<"$sub"; then
    fail "esg $cmd: no subsection .SS \"esg $cmd ...\" under COMMANDS"
    continue
  fi
  help=$("$esg" help "$cmd") || { fail "esg help $cmd failed"; continue; }
  missing=""
  for opt in $(printf '%s\n' "$help" | options_of); do
    has_option "$sub" "$opt" || missing="$missing $opt"
  done
  [ -z "$missing" ] && ok "esg $cmd: documented with its options" ||
    fail "esg $cmd: options of 'esg help $cmd' not in its man subsections:$missing"
done
# the options of `esg --help` itself, anywhere in the page
missing=""
for opt in $(printf '%s\n' "$main" | sed -n '/^options:/,$p' | options_of); do
  has_option "$text" "$opt" || missing="$missing $opt"
done
[ -z "$missing" ] && ok "the options of esg --help are in the page" || fail "options of esg --help not in the page:$missing"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
