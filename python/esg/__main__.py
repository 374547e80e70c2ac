"""python3 -m esg run GATEWAY.py: a Python gateway script over JSON lines, as `esg run` runs a Lua one.

The script defines `gateway`: a dict of esg.Gateway's keyword arguments (without the
store; `source` included), or a function of no arguments returning one. Relative paths
of its esg.source.jsonl / esg.sink.jsonl descriptors are relative to the script; -i and
-o (relative to the current directory) override them. The sink writes to stdout; a
progress line (when stderr is a terminal) and the summary go to stderr, in the format of
`esg run`. Exit status: 0 no fault recorded, 1 at least one, 2 usage or setup error.
See docs/python.md, "The command".
"""
from __future__ import annotations

import argparse
import os
import random
import runpy
import sys
import time
from typing import Any, Dict, List, Optional

import esg

RUN_TYPE = "esg.run"
RUN_KEY = "esg.runs"
COUNTERS = ("received", "delivered", "duplicates", "echoes", "stale", "faults", "filtered", "dropped", "busy",
            "cancelled")


class UsageError(Exception):
    """A setup error: exit status 2."""


def human_bytes(n: int) -> str:
    if n < 1024:
        return "%d bytes" % n
    if n < 1024 * 1024:
        return "%.1f KiB" % (n / 1024)
    return "%.1f MiB" % (n / 1048576)


def durability_lines(c: Dict[str, Any], written: Optional[int], group: float) -> List[str]:
    """What the store wrote and what the commit mode trades, as esg run says it."""
    lines = []
    if written is not None:
        per = ", %d bytes per event" % int(written / c["received"] + 0.5) if c["received"] else ""
        lines.append("  store writes       %s%s" % (human_bytes(written), per))
    if group > 0:
        lines.append("  commits            grouped, up to %g s: a crash repeats the last %g s of events "
                     "(the sink may see them twice)" % (group, group))
    else:
        lines.append("  commits            each claim at once: a crash loses nothing (--group-commit S: about 5x "
                     "faster, 1/80 of the writes, a crash repeats the last S s)")
    return lines


def summary(name: str, c: Dict[str, Any], elapsed: float, faults: List[Any], written: Optional[int] = None,
            group: float = 0.0) -> str:
    """The summary `esg run` prints (lua/esg/cli.lua), for the counters c."""
    lines = [
        "%s: %d received in %.3f s" % (name, c["received"], elapsed),
        "  delivered          %8d" % c["delivered"],
        "  duplicates         %8d" % c["duplicates"],
        "  echoes suppressed  %8d" % c["echoes"],
        "  stale              %8d" % c["stale"],
        "  faults             %8d" % c["faults"],
    ]
    extra = ["%s %d" % (k, c[k]) for k in ("filtered", "dropped", "busy", "cancelled") if c[k] > 0]
    if extra:
        lines.append("  (" + ", ".join(extra) + ")")
    lines += durability_lines(c, written, group)
    for i, f in enumerate(faults):
        if i >= 5:
            lines.append("  ... and %d more: esg faults list" % (len(faults) - 5))
            break
        where = "line %d" % f.line if f.line else "event"
        eid = " (%s)" % f.event_id if f.event_id else ""
        lines.append("  fault %s: %s%s, %s: %s" % (f.id, where, eid, f.stage, (f.error or "").split("\n", 1)[0]))
    return "\n".join(lines) + "\n"


def progress_line(name: str, c: Dict[str, Any], elapsed: float) -> str:
    return "\r%s: received %d, delivered %d, duplicates %d, faults %d (%.1f s)\x1b[K" % (
        name, c["received"], c["delivered"], c["duplicates"], c["faults"], elapsed)


def load_script(script: str) -> Dict[str, Any]:
    """The Gateway keywords the script defines (`gateway`: a dict, or a function returning one)."""
    if not os.path.isfile(script):
        raise UsageError("cannot read " + script)
    here = os.path.dirname(os.path.abspath(script))
    sys.path.insert(0, here)  # as `python3 script.py` would: the script imports its neighbours
    try:
        ns = runpy.run_path(script, run_name="__esg_gateway__")
    except SystemExit:
        raise
    except BaseException as e:  # noqa: B902 (the script's own error, whatever it is)
        raise UsageError("%s: %s: %s" % (script, type(e).__name__, e)) from e
    spec = ns.get("gateway")
    if callable(spec) and not isinstance(spec, dict):
        try:
            spec = spec()
        except Exception as e:
            raise UsageError("%s: gateway(): %s: %s" % (script, type(e).__name__, e)) from e
    if not isinstance(spec, dict):
        raise UsageError("%s: define gateway = dict(...) (esg.Gateway's keywords) or a function returning it"
                         % script)
    if "store" in spec:
        raise UsageError("%s: gateway has no store keyword (the command opens it: --db)" % script)
    return dict(spec)


def relative_to(base: str, desc: Any) -> Any:
    """A jsonl source or sink descriptor with a relative path made relative to base."""
    if isinstance(desc, (esg.sink.Sink, esg.source.Source)) and desc.kind == "jsonl" and desc.path != "-" \
            and not os.path.isabs(desc.path):
        path = os.path.join(base, desc.path)
        return esg.sink.jsonl(path) if isinstance(desc, esg.sink.Sink) else esg.source.jsonl(path)
    return desc


def source_name(src: Any) -> str:
    if src is None:
        return "stdin"
    if isinstance(src, esg.source.Source):
        return {"jsonl": "stdin" if src.path == "-" else src.path, "lines": "lines"}.get(src.kind, src.kind)
    return str(src)


def cmd_run(a: argparse.Namespace) -> int:
    script = a.script
    if a.group_commit is not None and a.group_commit < 0:
        raise UsageError("--group-commit needs a number >= 0")
    if a.progress is not None and a.progress <= 0:
        raise UsageError("--progress needs a number of seconds > 0")
    if a.fault_ttl is not None and a.fault_ttl < 0:
        raise UsageError("--fault-ttl needs a number >= 0")
    if not 0 <= a.max_line <= esg.EVENT_MAX_BYTES:
        raise UsageError("--max-line is 0..%d (an event's limit)" % esg.EVENT_MAX_BYTES)
    spec = load_script(script)
    spec.setdefault("max_line", a.max_line)
    base = os.path.dirname(script) or "."
    if a.input is not None:
        spec["source"] = esg.source.jsonl(a.input)
    else:
        spec["source"] = relative_to(base, spec.get("source"))
    sink = relative_to(base, spec.get("sink"))
    if a.output is not None and (sink is None or (isinstance(sink, esg.sink.Sink) and sink.kind in ("stdout", "jsonl"))):
        sink = esg.sink.jsonl(a.output)
    spec["sink"] = sink
    db = a.db or ((script[:-3] if script.endswith(".py") else script) + ".db")
    try:
        store = esg.Store(db, durability=a.durability, group_commit=a.group_commit or 0.0)
    except esg.Error as e:
        print("esg: cannot open the store %s: %s" % (db, e), file=sys.stderr)
        return 2
    faults: List[Any] = []
    user_on_fault = spec.get("on_fault")

    def on_fault(f: Any) -> None:
        if len(faults) < 100:
            faults.append(f)
        if user_on_fault:
            user_on_fault(f)

    spec["on_fault"] = on_fault
    name = spec.get("name") or script
    started_ms = int(round(store.now() * 1000))
    run_id = esg.uuid5("esg.run/%s/%d/%d/%r" % (script, started_ms, os.getpid(), random.random()))
    # fault records name the script and the run, as esg run writes them
    spec.setdefault("fault_note", "script %s, run %s" % (script, run_id))
    t0 = time.monotonic()
    written0 = store.bytes_written
    progress = None
    every = a.progress
    terminal = every is None and not a.quiet and not a.no_progress and sys.stderr.isatty()
    if every is not None and not a.no_progress:
        next_at = [every]

        def progress(c: Dict[str, Any]) -> None:
            elapsed = time.monotonic() - t0
            if elapsed >= next_at[0]:
                sys.stderr.write(progress_line(name, c, elapsed).lstrip("\r").replace("\x1b[K", "") + "\n")
                sys.stderr.flush()
                next_at[0] = elapsed + every
    elif terminal:
        def progress(c: Dict[str, Any]) -> None:
            sys.stderr.write(progress_line(name, c, time.monotonic() - t0))
            sys.stderr.flush()
    try:
        try:
            gw = esg.Gateway(store, **spec)
        except (TypeError, ValueError, esg.Error) as e:
            raise UsageError("%s: %s" % (script, e)) from e
        try:
            c = gw.run(progress=progress)
        finally:
            gw.close()
        c = gw.stats
        elapsed = time.monotonic() - t0
        if terminal:
            progress(c)
            sys.stderr.write("\n")
        if a.fault_ttl:
            store.purge_faults(before=store.now() - a.fault_ttl)
        store.flush()
        written = store.bytes_written - written0
        record = {"id": esg.uuid5("esg.run/" + run_id), "type": RUN_TYPE, "timestamp": int(round(store.now() * 1000)),
                  "partitionKey": RUN_KEY,
                  "run": dict({k: c[k] for k in COUNTERS}, script=script, name=spec.get("name"),
                              source=source_name(spec.get("source")), started=started_ms, elapsed=elapsed,
                              kind="run")}
        store.put_event(record, RUN_KEY)
    except esg.Error as e:
        print("esg run: %s" % e, file=sys.stderr)
        store.close()
        return 2
    except UsageError:
        store.close()
        raise
    store.close()
    if not a.quiet:
        sys.stderr.write(summary(name, c, elapsed, faults, written, a.group_commit or 0.0))
    return 1 if c["faults"] > 0 else 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python3 -m esg", description="libesg from Python: run a gateway script.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run", help="run a gateway script over JSON lines",
        description="Runs the pipeline the script defines (gateway = dict(...) of esg.Gateway's keywords, or a "
                    "function returning it): source -> filter -> claim -> latch -> enrich -> transform -> sink, "
                    "one JSON line (event envelope) at a time. Summary on stderr; exit 0 when no fault was "
                    "recorded, 1 otherwise, 2 on setup errors.")
    run.add_argument("script", metavar="SCRIPT.py")
    run.add_argument("-i", "--input", metavar="FILE",
                     help='read events from FILE ("-" = stdin; default: the script\'s source, else stdin)')
    run.add_argument("-o", "--output", metavar="FILE",
                     help="append the sink's JSON lines to FILE instead of stdout (a stdout or jsonl sink)")
    run.add_argument("--db", metavar="PATH", help="the store (default: SCRIPT with .db for .py, next to it)")
    run.add_argument("--durability", choices=("normal", "full"), default="normal",
                     help="full: fsync each commit (default: normal)")
    run.add_argument("--group-commit", metavar="S", type=float, default=None,
                     help="commit claims in groups at most S seconds old (default 0: each claim at once). "
                          "About 5x the events/s and 1/80 of the bytes written (docs/performance.md W1, W5); a "
                          "crash then loses the open group: its events run again, so the sink may see up to S "
                          "seconds of events twice (an HTTP sink resends the same bytes and Idempotency-Key). "
                          "The summary shows the bytes written.")
    run.add_argument("--fault-ttl", metavar="S", type=float, default=None,
                     help="at the end, delete faults last attempted over S s ago")
    run.add_argument("--max-line", metavar="BYTES", type=int, default=0,
                     help="a longer input line is a fault, stored as its first 64 KiB with its length and "
                          "SHA-256 (default and most: %d, an event's limit)" % esg.EVENT_MAX_BYTES)
    run.add_argument("--progress", metavar="S", type=float, default=None,
                     help="a plain progress line every S seconds, also when stderr is not a terminal (a pipe, "
                          "a log, systemd); on a terminal the line is redrawn in place by default")
    run.add_argument("-q", "--quiet", action="store_true", help="no summary")
    run.add_argument("--no-progress", action="store_true", help="no progress line")
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    if a.command != "run":
        ap.print_usage(sys.stderr)
        print("python3 -m esg: expected a command (run)", file=sys.stderr)
        return 2
    try:
        return cmd_run(a)
    except UsageError as e:
        print("esg run: %s" % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nesg run: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
