#!/bin/sh
# pip install . into a fresh venv (Debian's setuptools through --system-site-packages, no
# PyPI): the extension is built against the venv's interpreter, `import esg` works from
# outside the tree without LD_LIBRARY_PATH or PYTHONPATH, the stubs are installed, a small
# gateway runs, and `python3 -m build` makes a wheel (when python3-build is installed).
# Usage: pip_venv.sh PYTHON SOURCE_DIR WORK_DIR
set -eu
py=$1 src=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
"$py" -m venv --system-site-packages "$work/venv"
unset PYTHONPATH LD_LIBRARY_PATH
cd "$work"
"$work/venv/bin/pip" install --no-build-isolation --no-index -q "$src" > "$work/pip.log" 2>&1 || {
  tail -n 30 "$work/pip.log"; echo "FAIL pip install: see $work/pip.log"; exit 1; }
site=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_path('platlib'))")
for f in __init__.py __init__.pyi _esg.pyi py.typed gateway.py; do
  [ -f "$site/esg/$f" ] || { echo "FAIL not installed: $site/esg/$f"; exit 1; }
done
"$work/venv/bin/python" - <<'PY'
import esg, os, sys
assert esg.__file__.startswith(sys.prefix), esg.__file__  # the venv's copy, not the tree's
out = []
with esg.Store(os.path.join(os.getcwd(), "pip.db")) as store:
    gw = esg.Gateway(store, transform=lambda ev, ctx: {"id": ev["id"]},
                     sink=esg.sink.callback(lambda o, ctx: out.append(o)))
    first = gw.push(b'{"id":"p1","type":"t","timestamp":1}')
    again = gw.push(b'{"id":"p1","type":"t","timestamp":1}')
    st = gw.stats
    gw.close()
assert (first, again) == ("delivered", "duplicate") and st["delivered"] == 1, (first, again, st)
print("ok venv import and gateway:", esg.version)
PY
if "$py" -c "import build" 2>/dev/null; then
  "$py" -m build --wheel --no-isolation --outdir "$work/dist" "$src" > "$work/build.log" 2>&1 || {
    tail -n 30 "$work/build.log"; echo "FAIL python3 -m build: see $work/build.log"; exit 1; }
  ls "$work/dist"/esg-*.whl > /dev/null || { echo "FAIL no wheel in $work/dist"; exit 1; }
  echo "ok wheel: $(basename "$work"/dist/esg-*.whl)"
else
  echo "skip python3 -m build: python3-build is not installed"
fi
