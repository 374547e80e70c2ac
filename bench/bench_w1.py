#!/usr/bin/env python3
"""W1 (idempotent consume, ../shared/bench/WORKLOAD.md) through the Python API.

Measures in one run, each on a fresh database file:
  py-raw-tx2        stdlib sqlite3 + json + hashlib; the claim and the completion each
                    committed (autocommit: one transaction per statement)
  py-raw-batch1000  the same, 1000 events per transaction
  py-esg-durable    esg.Store: each claim and completion committed before returning
  py-esg-grouped    esg.Store with group commit (group_commit_max=1000)
Pass 1: N new events; pass 2: the same N again, all duplicates. Prints

  RESULT label=<label> pass=<1|2> n=<N> eps=<events/s>      (median of --runs runs)
  RATIO  <label>/<baseline> pass=<p> x=<ratio>

Usage: PYTHONPATH=<build>/bindings/python/pkg /usr/bin/python3 bench/bench_w1.py [--n 100000] [--runs 3] [--dir DIR]
"""
import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
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


APPROACHES = [
    ("py-raw-tx2", lambda p, ev: run_raw(p, ev, 0)),
    ("py-raw-batch1000", lambda p, ev: run_raw(p, ev, 1000)),
    ("py-esg-durable", lambda p, ev: run_esg(p, ev, False)),
    ("py-esg-grouped", lambda p, ev: run_esg(p, ev, True)),
]
RATIOS = [("py-esg-durable", "py-raw-tx2"), ("py-esg-grouped", "py-raw-batch1000")]


def main(argv=None):
    ap = argparse.ArgumentParser(description="W1 through the Python API (see the module doc)")
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=3, help="runs per approach; the median is reported")
    ap.add_argument("--dir", default=None, help="where the database files go (default: a temp dir)")
    ap.add_argument("--only", default=None, help="comma-separated labels to run")
    a = ap.parse_args(argv)
    events = make_events(a.n)
    base = tempfile.mkdtemp(prefix="bench_w1_py_", dir=a.dir)
    eps = {}
    try:
        for run in range(a.runs):  # interleave approaches so machine noise hits all alike
            for label, fn in APPROACHES:
                if a.only and label not in a.only.split(","):
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
    for (label, p), v in sorted(med.items(), key=lambda kv: ([l for l, _ in APPROACHES].index(kv[0][0]), kv[0][1])):
        print(f"RESULT label={label} pass={p} n={a.n} eps={v:.0f}")
    for num, den in RATIOS:
        for p in (1, 2):
            if (num, p) in med and (den, p) in med:
                print(f"RATIO {num}/{den} pass={p} x={med[(num, p)] / med[(den, p)]:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
