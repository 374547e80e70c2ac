#!/usr/bin/env python3
"""Runs the documentation's runnable snippets, so a doc cannot drift from the code.

A fenced block whose info string holds the word `run` (```c run, ```lua run,
```python run, ```sh run) in README.md or docs/*.md is extracted and run on its own in a
fresh temporary folder; it must exit 0. C is compiled against the build tree and linked
with libesg; Lua runs under `esg lua` (the module and esg.gateway at hand); Python with
the build tree's package on PYTHONPATH; sh under bash -euo pipefail with the esg command
and python3 (the build's interpreter) on PATH. ESG_SRC names the source tree.

A block whose info string holds `file=NAME` (```lua file=orders.lua) is not run: it is
written as NAME into the folder of every run block after it in the same document, so a
script shown once can be run by the block that follows (`dofile("orders.lua")`,
`esg run orders.lua`). `timeout=S` sets a run block's time limit (default 60 s).

    snippets.py SOURCE_DIR BUILD_DIR PYTHON [DOC...]    (DOC: only these, e.g. docs/cache.md)
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.M | re.S)


def attrs(info):
    words = info.split()
    return set(words), dict(w.split("=", 1) for w in words if "=" in w)


def snippets(src, only):
    files = [src / "README.md"] + sorted((src / "docs").glob("*.md"))
    for f in files:
        rel = f.relative_to(src)
        if only and str(rel) not in only:
            continue
        text, shown = f.read_text(), {}
        for m in FENCE.finditer(text):
            lang, (words, kv), body = m.group(1), attrs(m.group(2)), m.group(3)
            if "file" in kv:
                shown[kv["file"]] = body
            elif "run" in words:
                line = text.count("\n", 0, m.start()) + 1
                yield rel, line, lang, body, dict(shown), float(kv.get("timeout", 60))


def run(src, build, python, where, lang, body, tmp, files, timeout):
    for name, text in files.items():
        (tmp / name).write_text(text)
    bindir = tmp / ".bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(os.path.abspath(shutil.which(python) or python))
    env = dict(os.environ)
    env["PATH"] = f"{build}/bindings/lua:{bindir}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{build}/bindings/python/pkg"
    env["LD_LIBRARY_PATH"] = str(build)
    if lang == "c":
        c = tmp / "snippet.c"
        c.write_text(body)
        cc = ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{src}/libesg/include", f"-I{build}/include",
              str(c), "-o", str(tmp / "snippet"), f"-L{build}", "-lesg", f"-Wl,-rpath,{build}", "-lcjson"]
        subprocess.run(cc, check=True, cwd=tmp)
        cmd = [str(tmp / "snippet")]
    elif lang == "lua":
        (tmp / "snippet.lua").write_text(body)
        cmd = [f"{build}/bindings/lua/esg", "lua", "snippet.lua"]
    elif lang == "python":
        (tmp / "snippet.py").write_text(body)
        cmd = [python, "snippet.py"]
    elif lang in ("sh", "bash", "shell"):
        (tmp / "snippet.sh").write_text(body)
        cmd = ["bash", "-euo", "pipefail", "snippet.sh"]
    else:
        raise SystemExit(f"{where}: no runner for ```{lang}")
    env["ESG_SRC"] = str(src)
    p = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}\n{p.stdout}{p.stderr}")


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    src, build, python = pathlib.Path(sys.argv[1]).resolve(), pathlib.Path(sys.argv[2]).resolve(), sys.argv[3]
    only = set(sys.argv[4:])
    failed = ran = 0
    for path, line, lang, body, files, timeout in snippets(src, only):
        where = f"{path}:{line}"
        with tempfile.TemporaryDirectory(prefix="esg-snippet-") as d:
            try:
                run(src, build, python, where, lang, body, pathlib.Path(d), files, timeout)
                print(f"ok   {where} ({lang})")
            except (RuntimeError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                failed += 1
                print(f"FAIL {where} ({lang}): {e}")
        ran += 1
    print(f"{ran - failed} passed, {failed} failed")
    if ran == 0:
        print("no runnable snippets found")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
