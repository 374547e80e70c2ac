#!/usr/bin/env python3
"""One scenario table, three languages (tests/README.md, "Scenarios").

    run.py --c build/tests/scenarios/gateway_c --esg build/bindings/lua/esg \\
           --python /usr/bin/python3 --tmp DIR [-k NAME]

Every scenario of scenarios.json runs through the C gateway (gateway_c), the Lua script
under `esg run` and the Python script under `python3 -m esg run`, each on a fresh store
with its own receiver (tests/support/receiver.py, 127.0.0.1). What each leaves (run
records, fault records, claims, entities, latches, and the requests the receiver got)
is normalised, checked against the scenario's expectations and compared between the
languages; a difference prints a diff naming the scenario and the two languages.
"""
import argparse
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
import receiver  # noqa: E402

import esg  # noqa: E402  (seeding: the store's state before a run)

LANGS = ("c", "lua", "python")
COUNTERS = ("received", "delivered", "duplicates", "echoes", "stale", "faults", "filtered", "dropped", "busy",
            "cancelled")


class Scenario:
    """One row of the table, with its files in its own directory per language."""

    def __init__(self, row, defaults, customers):
        self.row = row
        self.name = row["name"]
        self.lines = [e if isinstance(e, str) else json.dumps(e, separators=(",", ":"), ensure_ascii=False)
                      for e in row["events"]]
        self.events = []  # the lines that are JSON objects with an id (the others are parse faults)
        for line in self.lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and isinstance(ev.get("id"), str):
                self.events.append(ev)
        self.config = dict(defaults, **row.get("config", {}), customers=customers)
        self.steps = row.get("steps", [{"run": True}])
        self.expect = row["expect"]

    def dump_keys(self):
        claims, entities = [], []
        for ev in self.events:
            claims.append("evt:" + ev["id"])
            if "order" in ev:
                entities.append("order:" + ev["order"]["id"])
        for s in self.row.get("seed", []):
            claims += [s[k] for k in ("claim", "completed") if k in s]
            entities += [s["entity"]] if "entity" in s else []
        claims, entities = sorted(set(claims)), sorted(set(entities))
        return {"claims": claims, "entities": entities,
                "latches": [[k, side] for k in entities for side in ("shop", "crm")]}


class Tools:
    """The drivers' command lines (run in the scenario's directory of that language)."""

    def __init__(self, a):
        self.c, self.esg = os.path.abspath(a.c), os.path.abspath(a.esg)
        self.python = a.python

    def run(self, lang):
        if lang == "c":
            return [self.c, "run", "config.json", "events.jsonl", "store.db"]
        if lang == "lua":
            return [self.esg, "run", os.path.join(HERE, "gateway.lua"), "-i", "events.jsonl", "--db", "store.db", "-q"]
        return [self.python, "-m", "esg", "run", os.path.join(HERE, "gateway.py"), "-i", "events.jsonl",
                "--db", "store.db", "-q"]

    def resubmit(self, lang):
        if lang == "c":
            return [self.c, "resubmit", "config.json", "store.db"]
        if lang == "lua":
            return [self.esg, "faults", "resubmit", "--all", "--script", os.path.join(HERE, "gateway.lua"),
                    "--db", "store.db", "-q"]
        return [self.python, os.path.join(HERE, "resubmit.py"), os.path.join(HERE, "gateway.py"), "store.db"]

    def dump(self, lang):
        if lang == "c":
            return [self.c, "dump", "config.json", "store.db"]
        if lang == "lua":
            return [self.esg, "lua", os.path.join(HERE, "dump.lua"), "config.json", "store.db"]
        return [self.python, os.path.join(HERE, "dump.py"), "config.json", "store.db"]

    @staticmethod
    def ok(lang, cmd):
        """Exit statuses of a good run: the esg commands exit 1 when a fault was recorded (or a
        resubmitted one failed again), which scenarios expect; the other drivers exit 0."""
        return (0, 1) if lang != "c" and cmd[1] in ("run", "faults", "-m") else (0,)


def seed(path, sc):
    """The store's state before the first step, written through the Python binding."""
    rows = sc.row.get("seed", [])
    if not rows:
        return
    with esg.Store(path) as store:
        for s in rows:
            if "claim" in s:  # held by a live other owner
                c = store.claim(s["claim"], esg.parse_event(sc.lines[s["payload"]]), lease=s["lease"])
                assert c.status == "new", c
            elif "completed" in s:  # an earlier event with the same id and another payload
                other = json.dumps(s["payload"], separators=(",", ":"))
                c = store.claim(s["completed"], esg.parse_event(other))
                store.complete(s["completed"], c.token, s["result"])
            elif "entity" in s:
                assert store.upsert(s["entity"], s["version"], s["doc"]) == "applied"
            elif "latch" in s:  # our own write to that side, whose echo is coming
                store.latch(s["latch"], s["side"], s["doc"], ttl=600)


def call(cmd, d, env, ok):
    """Runs a driver; anything on stderr (a traceback, a warning) fails the scenario too."""
    p = subprocess.run(cmd, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    if p.returncode not in ok or p.stderr:
        raise RuntimeError("exit %d: %s\n%s" % (p.returncode, " ".join(cmd), p.stderr.decode(errors="replace")))
    return p.stdout


def crash(cmd, d, env, log, key, lease):
    """Runs cmd until the receiver has logged a request of key, then SIGKILLs it and waits out
    the lease of the claim it held (taken before that request left)."""
    p = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    try:
        while not any(r["key"] == key for r in receiver.requests(log)):
            if p.poll() is not None:
                raise RuntimeError("%s ended (exit %d) before a request of %s: %s"
                                   % (cmd[0], p.returncode, key, p.stderr.read().decode()))
            if time.monotonic() > deadline:
                raise RuntimeError("no request of %s within 30 s" % key)
            time.sleep(0.005)  # watching the log
        seen = time.monotonic()
    finally:
        p.kill()
        p.wait()
        p.stderr.close()
    time.sleep(max(0.0, seen + lease + 0.05 - time.monotonic()))


def run_one(sc, lang, tools, tmp):
    d = os.path.join(tmp, sc.name, lang)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    log = os.path.join(d, "receiver.jsonl")
    url, stop = receiver.start(log)
    try:
        cfg = dict(sc.config, url=url + "/orders", dump=sc.dump_keys())
        with open(os.path.join(d, "config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False)
        with open(os.path.join(d, "events.jsonl"), "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in sc.lines))
        seed(os.path.join(d, "store.db"), sc)
        env = dict(os.environ, SCEN_CONFIG=os.path.join(d, "config.json"))
        for step in sc.steps:
            if "crash" in step:
                crash(tools.run(lang), d, env, log, step["crash"], cfg["lease"])
            else:
                cmd = tools.resubmit(lang) if "resubmit" in step else tools.run(lang)
                call(cmd, d, env, tools.ok(lang, cmd))
        raw = json.loads(call(tools.dump(lang), d, env, (0,)))
    finally:
        stop()
    return normalise(raw, receiver.requests(log), lang)


# A step's own error carries its language's decoration: Python's exception type, Lua's
# position in the script (error() at level 1). The library's text carries neither.
DECORATION = {"python": re.compile(r"^RuntimeError: "), "lua": re.compile(r"^[^\n:]*gateway\.lua:\d+: "),
              "c": None}
# What the library's text holds that no two runs share: the script and run a fault note names
# (each driver's own path, a fresh run id) and what curl measured.
VARYING = [(re.compile(r"\(script [^,()]+, run [0-9a-f-]{36}\)$"), "(script S, run R)"),
           (re.compile(r"timed out after \d+ milliseconds"), "timed out after N milliseconds")]


def steady(text):
    for pattern, repl in VARYING:
        text = pattern.sub(repl, text)
    return text


def normalise(raw, requests, lang):
    faults = []
    for f in raw["faults"]:
        lines = f["error"].split("\n")
        msg = DECORATION[lang].sub("", lines[0]) if DECORATION[lang] else lines[0]
        faults.append({"id": f["id"], "event_id": f["event_id"], "stage": f["stage"],
                       "http_status": f["http_status"], "attempts": f["attempts"], "error": steady(msg),
                       "where": steady(lines[1]) if len(lines) > 1 else None, "event": f["event"],
                       "times_ordered": f["first_attempt"] <= f["last_attempt"]})
    got = {}
    for r in requests:
        h = r["headers"]
        got.setdefault(r["key"], []).append({
            "method": r["method"], "path": r["path"], "content_type": h.get("content-type"),
            "x_gateway": h.get("x-gateway"), "body": r["body"], "status": r["status"]})
    return {"runs": [{"kind": r["kind"], **{k: r["counters"][k] for k in COUNTERS}} for r in raw["runs"]],
            "faults": faults, "claims": raw["claims"], "entities": raw["entities"], "latches": raw["latches"],
            "requests": got, "_times": {k: [r["t"] for r in requests if r["key"] == k] for k in got}}


def check(sc, res):
    """The scenario's expectations; returns what does not hold."""
    ex, bad = sc.expect, []

    def want(cond, what):
        if not cond:
            bad.append(what)

    runs = [{"kind": r["kind"], **{k: r.get(k, 0) for k in COUNTERS}} for r in ex["runs"]]
    want(res["runs"] == runs, "runs: got %s, want %s" % (res["runs"], runs))
    faults = ex.get("faults", [])
    want(len(res["faults"]) == len(faults), "faults: got %d, want %d" % (len(res["faults"]), len(faults)))
    for got, w in zip(res["faults"], faults):
        for k, v in w.items():
            want(got[k] == v, "fault %s: %s is %r, want %r" % (got["id"], k, got[k], v))
        want(got["times_ordered"], "fault %s: first_attempt after last_attempt" % got["id"])
    for key, w in ex.get("claims", {}).items():
        got = res["claims"].get(key)
        if isinstance(w, str):
            want(got == w, "claim %s: got %s, want %s" % (key, got, w))
            continue
        result = json.loads(got["result"]) if isinstance(got, dict) and got.get("result") else None
        want(isinstance(result, dict) and all(result.get(k) == v for k, v in w.items()),
             "claim %s: got %s, want members %s" % (key, got, w))
    for key, v in ex.get("entities", {}).items():
        got = res["entities"].get(key)
        want((got is None) if v is None else (got is not None and got["version"] == v),
             "entity %s: got %s, want version %s" % (key, got, v))
    for key, n in ex.get("latches", {}).items():
        want(res["latches"].get(key) == n, "latches %s: got %s, want %s" % (key, res["latches"].get(key), n))
    statuses = {k: [r["status"] for r in v] for k, v in res["requests"].items()}
    want(statuses == ex.get("requests", {}), "requests: got %s, want %s" % (statuses, ex.get("requests", {})))
    for key, reqs in res["requests"].items():  # the outbox: every attempt sends the same bytes
        want(all(r == dict(reqs[0], status=r["status"]) for r in reqs),
             "requests of %s differ between attempts" % key)
        want(all(r["method"] == "PUT" and r["path"] == "/orders" and r["x_gateway"] == "scenarios"
                 for r in reqs), "requests of %s: method, path or header" % key)
    for key, n in ex.get("loads", {}).items():
        body = json.loads(res["requests"][key][0]["body"])
        want(body["customer"]["loads"] == n, "%s: customer loaded %s times, want %s"
             % (key, body["customer"]["loads"], n))
    for key, gap in ex.get("min_gap", {}).items():
        t = res["_times"].get(key, [])
        want(len(t) >= 2 and t[1] - t[0] >= gap, "%s: retried after %s, want >= %s s" % (key, t, gap))
    return bad


def diff(name, a, b, ra, rb):
    ta = json.dumps({k: v for k, v in ra.items() if k != "_times"}, indent=1, sort_keys=True, ensure_ascii=False)
    tb = json.dumps({k: v for k, v in rb.items() if k != "_times"}, indent=1, sort_keys=True, ensure_ascii=False)
    return "".join(difflib.unified_diff(ta.splitlines(True), tb.splitlines(True),
                                        "%s [%s]" % (name, a), "%s [%s]" % (name, b)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--c", required=True, help="the gateway_c program")
    ap.add_argument("--esg", required=True, help="the esg command")
    ap.add_argument("--python", default=sys.executable, help="the interpreter of python3 -m esg")
    ap.add_argument("--tmp", required=True, help="a directory for the stores and logs")
    ap.add_argument("-k", action="append", help="only the scenarios named")
    ap.add_argument("--lang", action="append", choices=LANGS, help="only these languages")
    a = ap.parse_args()
    with open(os.path.join(HERE, "scenarios.json"), encoding="utf-8") as f:
        table = json.load(f)
    tools = Tools(a)
    langs = a.lang or LANGS
    failures = 0
    t0 = time.monotonic()
    for row in table["scenarios"]:
        if a.k and row["name"] not in a.k:
            continue
        sc = Scenario(row, table["defaults"], table["customers"])
        t, before = time.monotonic(), failures
        results = {}
        for lang in langs:
            try:
                results[lang] = run_one(sc, lang, tools, a.tmp)
            except Exception as e:  # a driver that failed: the scenario fails, the others run
                print("FAIL %s [%s]: %s" % (sc.name, lang, e))
                failures += 1
        for lang, res in results.items():
            for problem in check(sc, res):
                print("FAIL %s [%s]: %s" % (sc.name, lang, problem))
                failures += 1
        names = list(results)
        for i, x in enumerate(names):
            for y in names[i + 1:]:
                d = diff(sc.name, x, y, results[x], results[y])
                if d:
                    print("FAIL %s: %s and %s differ\n%s" % (sc.name, x, y, d))
                    failures += 1
        print("%-22s %s  %.2f s" % (sc.name, "ok" if failures == before else "FAILED", time.monotonic() - t))
    print("%d failure(s), %.1f s" % (failures, time.monotonic() - t0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
