#!/usr/bin/env python3
"""W1 (idempotent consume, ../shared/bench/WORKLOAD.md) through the Python API.

Measures in one run, each on a fresh database file:
  py-raw-tx2        stdlib sqlite3 + json + hashlib; the claim and the completion each
                    committed (autocommit: one transaction per statement)
  py-raw-batch1000  the same, 1000 events per transaction
  py-esg-durable    esg.Store: each claim and completion committed before returning
  py-esg-grouped    esg.Store with group commit (group_commit_max=1000)
  gw-py-durable     W5: the events as a JSON lines file through esg.Gateway (default
                    idempotence, transform lambda ev, ctx: {"id": ev["id"], "price":
                    ev["thing"]["price"]}, a JSON lines file sink), each claim committed
  gw-py-grouped     the same with group commit
and, in the same run (interleaved with the Python approaches), the same libesg modes
through the C API: the C benchmark build/bench/bench_w1 run once per round with
ESG_BENCH_ONLY=esg-durable, esg-grouped, gw-c-durable and gw-c-grouped (the C
gateway with a C transform; --c-bench PATH, or "none").
Pass 1: N new events; pass 2: the same N again, all duplicates. Prints

  RESULT label=<label> pass=<1|2> n=<N> eps=<events/s>      (median of --runs runs)
  # C RESULT label=esg-<mode> pass=<p> n=<N> eps=<events/s> (median, same run)
  RATIO  <label>/<baseline> pass=<p> x=<ratio> target=<t> <ok|MISSED>

The order of the approaches rotates from one round to the next so machine noise
hits all of them alike.

Usage: PYTHONPATH=<build>/bindings/python/pkg /usr/bin/python3 bench/bench_w1.py [--n 100000] [--runs 5] [--dir DIR]
"""
import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

import esg

TTL_S = 3600.0


def make_events(n):
    return [
        ('{"id":"evt-%d","type":"thing-updated","timestamp":%d,"partitionKey":"thing-%d",'
         '"thing":{"id":"thing-%d","name":"name-%d","price":%d}}'
         % (i, 1700000000000 + i, i % 1000, i % 1000, i, i)).encode()
        for i in range(n)
    ]


def handler(ev, counter=[0]):  # the trivial handler of W1
    counter[0] += 1


def raw_open(path):
    con = sqlite3.connect(path, isolation_level=None)  # we manage transactions
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE IF NOT EXISTS claims (id TEXT PRIMARY KEY, hash BLOB, status INTEGER, expires INTEGER)")
    return con


def raw_pass(con, events, batch):
    """batch 0: every statement is its own transaction; else commit every `batch` events."""
    ins = "INSERT INTO claims (id, hash, status, expires) VALUES (?, ?, 0, ?) ON CONFLICT(id) DO NOTHING"
    upd = "UPDATE claims SET status = 1 WHERE id = ?"
    loads, sha, execute = json.loads, hashlib.sha256, con.execute
    expires = int(time.time() * 1000) + int(TTL_S * 1000)
    t0 = time.perf_counter()
    if batch:
        execute("BEGIN")
    for i, raw in enumerate(events, 1):
        ev = loads(raw)
        h = sha(raw).digest()
        if execute(ins, (ev["id"], h, expires)).rowcount == 0:
            pass  # duplicate: skip
        else:
            handler(ev)
            execute(upd, (ev["id"],))
        if batch and i % batch == 0:
            execute("COMMIT")
            execute("BEGIN")
    if batch:
        execute("COMMIT")
    return time.perf_counter() - t0


def esg_pass(store, events):
    parse, claim, complete = esg.parse_event, store.claim, store.complete
    t0 = time.perf_counter()
    for raw in events:
        ev = parse(raw)
        c = claim(ev.id, ev, 30.0, TTL_S)  # payload: the event's SHA-256
        if c.status == "duplicate":
            continue
        handler(ev)
        complete(ev.id, c.token)
    store.flush()
    return time.perf_counter() - t0


def run_raw(path, events, batch):
    con = raw_open(path)
    times = raw_pass(con, events, batch), raw_pass(con, events, batch)
    con.close()
    return times


def run_esg(path, events, grouped):
    opts = {"group_commit": 1.0, "group_commit_max": 1000} if grouped else {}
    with esg.Store(path, **opts) as s:
        return esg_pass(s, events), esg_pass(s, events)


def w5_transform(ev, ctx):  # W5's transform
    return {"id": ev["id"], "price": ev["thing"]["price"]}


def run_gw(path, events, grouped):
    """W5: both passes of W1's events as a JSON lines file through esg.Gateway."""
    src, out = path + ".in.jsonl", path + ".out.jsonl"
    with open(src, "wb") as f:  # written before the clock starts
        f.write(b"\n".join(events) + b"\n")
    opts = {"group_commit": 1.0, "group_commit_max": 1000} if grouped else {}
    n = len(events)
    try:
        with esg.Store(path, **opts) as s:
            gw = esg.Gateway(s, name="w5", lease=30.0, ttl=TTL_S, transform=w5_transform, sink=esg.sink.jsonl(out))
            times = []
            for p, key in ((1, "delivered"), (2, "duplicates")):  # pass 1 all new, pass 2 all duplicates
                t0 = time.perf_counter()
                st = gw.run(src)  # ends with the group's last commit
                times.append(time.perf_counter() - t0)
                if st[key] != n or st["faults"]:
                    raise RuntimeError(f"gw pass {p}: {st}")
            gw.close()
    finally:
        for f in (src, out):
            if os.path.exists(f):
                os.remove(f)
    return tuple(times)


APPROACHES = [
    ("py-raw-tx2", lambda p, ev: run_raw(p, ev, 0)),
    ("py-raw-batch1000", lambda p, ev: run_raw(p, ev, 1000)),
    ("py-esg-durable", lambda p, ev: run_esg(p, ev, False)),
    ("py-esg-grouped", lambda p, ev: run_esg(p, ev, True)),
    ("gw-py-durable", lambda p, ev: run_gw(p, ev, False)),
    ("gw-py-grouped", lambda p, ev: run_gw(p, ev, True)),
]
C_MODES = ["esg-durable", "esg-grouped", "gw-c-durable", "gw-c-grouped"]
# (numerator, denominator, target): the Python binding against hand-rolled stdlib
# sqlite3, and against the same mode through the C API
RATIOS = [("py-esg-durable", "py-raw-tx2", 1.0), ("py-esg-grouped", "py-raw-batch1000", 1.2),
          ("py-esg-durable", "esg-durable", 0.8), ("py-esg-grouped", "esg-grouped", 0.8),
          # W5: the Python gateway against the C gateway of the same run (a Python step per event)
          ("gw-py-durable", "gw-c-durable", 0.8), ("gw-py-grouped", "gw-c-grouped", 0.6)]
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_C_BENCH = os.path.join(HERE, "..", "build", "bench", "bench_w1")


def run_c(exe, mode, n, base):
    """One repetition of one mode of the C benchmark: {pass: eps}."""
    env = dict(os.environ, ESG_BENCH_ONLY=mode, ESG_BENCH_DIR=base)
    out = subprocess.run([exe, str(n), "1"], env=env, check=True, capture_output=True, text=True).stdout
    eps = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            f = dict(kv.split("=", 1) for kv in line.split()[1:])
            if f["label"] == mode:
                eps[int(f["pass"])] = float(f["eps"])
    return eps


def main(argv=None):
    ap = argparse.ArgumentParser(description="W1 through the Python API (see the module doc)")
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=5, help="rounds; the median is reported")
    ap.add_argument("--dir", default=None, help="where the database files go (default: a temp dir)")
    ap.add_argument("--only", default=None, help="comma-separated labels to run")
    ap.add_argument("--c-bench", default=DEFAULT_C_BENCH,
                    help='the C benchmark to run in the same rounds ("none": skip)')
    a = ap.parse_args(argv)
    events = make_events(a.n)
    base = tempfile.mkdtemp(prefix="bench_w1_py_", dir=a.dir)
    c_exe = None if a.c_bench == "none" else os.path.abspath(a.c_bench)
    if c_exe and not os.access(c_exe, os.X_OK):
        print(f"# no C benchmark at {c_exe}: the ratios to the C API are skipped", file=sys.stderr)
        c_exe = None
    jobs = [(label, fn) for label, fn in APPROACHES if not a.only or label in a.only.split(",")]
    if c_exe:
        jobs += [(mode, None) for mode in C_MODES if not a.only or mode in a.only.split(",")]
    eps = {}
    try:
        for run in range(a.runs):
            k = run % len(jobs)
            for label, fn in jobs[k:] + jobs[:k]:  # rotate the order so no approach always runs first
                if fn is None:
                    for p, v in run_c(c_exe, label, a.n, base).items():
                        eps.setdefault((label, p), []).append(v)
                    continue
                path = os.path.join(base, f"{label}-{run}.db")
                t1, t2 = fn(path, events)
                for p, t in ((1, t1), (2, t2)):
                    eps.setdefault((label, p), []).append(a.n / t)
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(path + suffix):
                        os.remove(path + suffix)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in eps.items()}
    order = [l for l, _ in APPROACHES] + C_MODES
    for (label, p), v in sorted(med.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        prefix = "# C " if label in C_MODES else ""
        print(f"{prefix}RESULT label={label} pass={p} n={a.n} eps={v:.0f}")
    for num, den, target in RATIOS:
        for p in (1, 2):
            if (num, p) in med and (den, p) in med:
                x = med[(num, p)] / med[(den, p)]
                print(f"RATIO {num}/{den} pass={p} x={x:.2f} target={target} {'ok' if x >= target else 'MISSED'}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
