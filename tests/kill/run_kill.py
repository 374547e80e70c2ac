#!/usr/bin/env python3
"""Kill sweep of a gateway runner: `esg run` (Lua) or `python3 -m esg run` (Python).

  run_kill.py --runner esg --esg BUILD/bindings/lua/esg
  run_kill.py --runner python --pythonpath BUILD/bindings/python/pkg

For each mode (durable, then --group-commit GROUP_S) the runner is started over one input
(gateway.lua / gateway.py: an HTTP sink to tests/support/receiver.py, a separate process
that outlives the runs) and SIGKILLed ESG_KILLS times (default 30) at random moments: after
a random delay, once the receiver's log has grown (mid-delivery), or once nothing was
answered for a while (the run waits for a slow delivery). Then it runs to the end.

Checked (tests/README.md, "Kill sweeps"), whenever no run is alive: the store passes
PRAGMA integrity_check; every delivery the receiver acknowledged to a killed run more than
the window (the open group's delay, GROUP_S or 0, plus MARGIN_S for the runner to hear
the answer) before its kill, and every one acknowledged to a run that ended by itself, is
completed in the store; a completed claim stays completed. At the end: every event was
acknowledged and its claim completed with a 2xx; every repeat of a request is
byte-identical to its first attempt (method, path, the headers the gateway sets, body);
no run sent a key whose completion was already in the store; an event was acknowledged
twice only when a kill could have lost the first completion (within the window).

ESG_KILL_SEED replays a sweep's input and kill plan (printed first; the moments are the machine's).
ESG_KILL_EVENTS: the input's first size (default 150; BATCH more whenever a run finds
nothing left, so every kill lands on work). ESG_KILL_MARGIN: MARGIN_S in seconds, for a
machine so loaded that a runner may not run for that long. ESG_KILL_KEEP=1 keeps the
files (kept anyway on a failure). Exit status 0 when every check held.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from killutil import Failed, Store, Tail, fail, lines, ports_of, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
RECEIVER = os.path.join(HERE, "..", "support", "receiver.py")
GROUP_S = 0.05      # --group-commit: the open group's delay
MARGIN_S = float(os.environ.get("ESG_KILL_MARGIN") or 0.4)  # from an answer to its completion, loaded
RUN_TIMEOUT_S = 60  # a run to the end that takes longer never finishes
BATCH = 50          # events added when the kills have left none to do


def reply_plan(rng):
    """What the receiver answers an event's attempts: mostly at once, some after a delay
    (kills mid-delivery), some 503 first (kills between retries), a few slow."""
    r = rng.random()
    if r < 0.5:
        return None
    if r < 0.75:
        return [{"delay_ms": rng.randint(5, 80)}]
    if r < 0.87:
        return [503, {"delay_ms": rng.randint(0, 30)}]
    if r < 0.92:
        return [{"status": 503, "retry_after": "1"}, 200]
    return [{"delay_ms": rng.randint(400, 900)}]


class Sweep:
    def __init__(self, a, mode, seed, tmp):
        self.a, self.mode = a, mode
        # the input from one stream, the kills from another: the same seed gives the same
        # events whatever the timing did to the kills
        self.events_rng = random.Random("%d/%s/events" % (seed, mode))
        self.rng = random.Random("%d/%s/kills" % (seed, mode))
        self.group = GROUP_S if mode == "grouped" else 0.0
        self.window = self.group + MARGIN_S
        self.dir = os.path.join(tmp, mode)
        os.makedirs(self.dir)
        self.log = os.path.join(self.dir, "requests.jsonl")
        self.answers = os.path.join(self.dir, "answers.jsonl")
        self.db = os.path.join(self.dir, "gateway.db")
        self.store = Store(self.db)
        self.keys, self.key_set = [], set()
        self.input = os.path.join(self.dir, "events.jsonl")
        self.add_events(a.events)
        self.runs = []          # {"start", "end", "kill" (None: ran to its end), "rc"}
        self.confirmed = {}     # key -> when its completion was first seen in the store (no run alive)
        self.checked = 0        # acknowledged deliveries the window check applied to
        self.mid_delivery = 0   # kills with a request on the wire
        self.between_retries = 0  # kills with a retry due

    def add_events(self, n):
        """n more events at the end of the input (the earlier ones are duplicates by now)."""
        with open(self.input, "a") as f:
            for i in range(len(self.keys), len(self.keys) + n):
                k = "%s-%d" % (self.mode[0], i)
                ev = {"id": k, "type": "kill-test", "timestamp": 1700000000000 + i, "partitionKey": "p-%d" % (i % 8)}
                plan = reply_plan(self.events_rng)
                if plan:
                    ev["reply"] = plan
                f.write(json.dumps(ev) + "\n")
                self.keys.append(k)
                self.key_set.add(k)

    def command(self):
        a = self.a
        script = os.path.join(HERE, "gateway.lua" if a.runner == "esg" else "gateway.py")
        head = [a.esg, "run"] if a.runner == "esg" else [sys.executable, "-m", "esg", "run"]
        cmd = head + [script, "-i", self.input, "--db", self.db, "--no-progress"]
        if self.group:
            cmd += ["--group-commit", str(self.group)]
        return cmd

    def spawn(self, n):
        env = dict(os.environ, ESG_KILL_URL=self.url)
        if self.a.pythonpath:
            env["PYTHONPATH"] = self.a.pythonpath
        err = open(os.path.join(self.dir, "run-%d.err" % n), "w")
        run = {"start": time.time(), "kill": None, "err": err.name}
        run["p"] = subprocess.Popen(self.command(), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err)
        err.close()
        self.runs.append(run)
        return run

    def ended(self, run):
        run["end"] = time.time()
        run["rc"] = run["p"].returncode
        if run["kill"] is None and run["rc"] != 0:
            with open(run["err"]) as f:
                fail("%s: run %d exited with %s:\n%s" % (self.mode, len(self.runs), run["rc"], f.read()))

    def kill_one(self):
        """One run killed at a random moment; False when it ended before the kill."""
        run = self.spawn(len(self.runs) + 1)
        p = run["p"]
        how = self.rng.random()
        if how < 0.5:  # at a random moment: mostly early, some late enough for the window check
            end = time.time() + (self.rng.uniform(0.0, 0.25) if how < 0.3 else self.rng.uniform(0.3, 0.9))
            while time.time() < end and p.poll() is None:
                time.sleep(0.001)
        elif how < 0.8:  # when the receiver's log has grown: a request is being answered
            n0, grow = self.tail.count(), self.rng.randint(1, 6)
            end = time.time() + 1.0
            while p.poll() is None and time.time() < end and self.tail.count() < n0 + grow:
                time.sleep(0.001)
            time.sleep(self.rng.uniform(0.0, 0.02))
        else:  # once nothing was answered for longer than the window: the run waits for a slow one
            quiet, end = self.window + self.rng.uniform(0.0, 0.15), time.time() + 1.5
            n0 = n = self.answered.count()
            last = time.time()
            while p.poll() is None and time.time() < end and (n == n0 or time.time() - last < quiet):
                if self.answered.count() != n:
                    n, last = self.answered.n, time.time()
                time.sleep(0.001)
        if p.poll() is None:
            kill = time.time()  # before the signal: the run lived at least this long
            os.kill(p.pid, signal.SIGSTOP)  # frozen: it opens no connection while they are listed
            ports = sorted(ports_of(p.pid, self.port))
            os.kill(p.pid, signal.SIGKILL)
            if p.wait() == -signal.SIGKILL:  # else it ended by itself just before
                run["kill"], run["ports"] = kill, ports
        self.ended(run)
        self.after_run(run)
        if run["kill"] is None:  # it ended first: meeting busy claims, or with nothing left to do
            claims = self.store.claims()
            if all(claims.get(k, (0,))[0] == 1 for k in self.keys):
                self.add_events(BATCH)
            else:
                self.wait_leases()
            return False
        if self.rng.random() < 0.5:  # else the next run meets the killed run's claims busy
            self.wait_leases()
        return True

    def wait_leases(self):
        """Until the leases of the claims not completed have run out (the store's clock is real time)."""
        held = [c[1] for c in self.store.claims().values() if c[0] != 1]
        time.sleep(max(0.0, max(held or [0]) / 1000.0 - time.time()) + 0.01)

    def owner(self, q):
        """The run that sent request q: the one alive when the receiver got it, unless it
        came on a connection of a killed run (written before the kill, read just after)."""
        for r in reversed(self.runs):
            if r["kill"] is not None and r["kill"] <= q["t"] <= r["end"] + 0.5 and q["peer"] in r["ports"]:
                return r
        for r in reversed(self.runs):
            if r["start"] <= q["t"]:
                return r
        return None

    def after_run(self, run):
        """The store once a run is gone: intact; every delivery acknowledged to it completed
        (killed: those acknowledged more than the window before the kill); what was completed
        stays so."""
        verdict = self.store.integrity()
        if verdict != "ok":
            fail("%s: integrity_check after run %d: %s" % (self.mode, len(self.runs), verdict))
        claims = self.store.claims()
        reqs = {(q["key"], q["attempt"]): q for q in lines(self.log)}
        answers = lines(self.answers)
        k = run["kill"]
        if k is not None:
            answered = {(x["key"], x["attempt"]): x["t"] for x in answers}
            if any(q["t"] >= run["start"] and answered.get(kq, k + 1) > k for kq, q in reqs.items()):
                self.mid_delivery += 1  # a request of this run had no answer yet
            refused = {x["key"]: x["attempt"] for x in answers
                       if run["start"] <= x["t"] <= k and x["status"] >= 500 and x["ok"]}
            if any(not (reqs.get((key, n + 1)) and reqs[(key, n + 1)]["t"] <= k) for key, n in refused.items()):
                self.between_retries += 1  # a 503 answered, its retry not sent yet
        for x in answers:
            q = reqs.get((x["key"], x["attempt"]))
            if not q or not (200 <= x["status"] < 300) or not x["ok"] or self.owner(q) is not run:
                continue
            if k is None or x["t"] <= k - self.window:
                self.checked += k is not None
                if claims.get(x["key"], (0,))[0] != 1:
                    fail("%s: %s was acknowledged %s but its claim is not completed after it"
                         % (self.mode, x["key"], "to run %d, which ended by itself" % len(self.runs) if k is None else
                            "%.3f s before kill %d (window %.3f s)" % (k - x["t"], len(self.runs), self.window)))
        for key, when in self.confirmed.items():
            if claims.get(key, (0,))[0] != 1:
                fail("%s: %s, completed in the store at %.3f, is no longer completed" % (self.mode, key, when))
        for key, c in claims.items():
            if c[0] == 1:
                self.confirmed.setdefault(key, run["end"])

    def to_the_end(self):
        """Runs until every claim is completed (a killed run's leases run out meanwhile)."""
        for _ in range(30):
            run = self.spawn(len(self.runs) + 1)
            try:
                run["p"].wait(timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                run["p"].kill()
                run["p"].wait()
                fail("%s: a run did not finish in %d s" % (self.mode, RUN_TIMEOUT_S))
            self.ended(run)
            self.after_run(run)
            claims = self.store.claims()
            if all(claims.get(k, (0,))[0] == 1 for k in self.keys):
                return
            self.wait_leases()
        fail("%s: 30 runs after the kills did not complete every claim" % self.mode)

    def check_end(self):
        verdict = self.store.integrity()
        if verdict != "ok":
            fail("%s: integrity_check at the end: %s" % (self.mode, verdict))
        claims = self.store.claims()
        for key in self.keys:
            done, _, result = claims.get(key, (0, 0, None))
            status = json.loads(result).get("status") if result else None
            if done != 1 or not isinstance(status, int) or not 200 <= status < 300:
                fail("%s: %s not delivered in the store: done %s, result %r" % (self.mode, key, done, result))
        reqs = lines(self.log)
        answers = {(x["key"], x["attempt"]): x for x in lines(self.answers)}
        first, acks = {}, {}
        for q in reqs:
            key = q["key"]
            if key not in self.key_set:
                fail("%s: a request with Idempotency-Key %r" % (self.mode, key))
            shape = (q["method"], q["path"], q["headers"], q["body"])
            if first.setdefault(key, shape) != shape:
                fail("%s: %s attempt %d differs from its first attempt:\n  %r\n  %r"
                     % (self.mode, key, q["attempt"], first[key], shape))
            if key in self.confirmed and self.owner(q)["start"] > self.confirmed[key]:
                fail("%s: %s sent again (attempt %d) after its completion was durable" % (self.mode, key, q["attempt"]))
            x = answers.get((key, q["attempt"]))
            if x and 200 <= x["status"] < 300:
                acks.setdefault(key, []).append((q, x))
        for key in self.keys:
            if key not in acks:
                fail("%s: %s never acknowledged by the receiver" % (self.mode, key))
            for (q, x), (q2, _) in zip(acks[key], acks[key][1:]):
                if not x["ok"]:
                    continue  # the answer never reached its client: nothing could complete
                run, later = self.owner(q), self.owner(q2)
                lost_ok = run["kill"] is not None and x["t"] > run["kill"] - self.window
                if not lost_ok or later is run:
                    fail("%s: %s acknowledged twice (attempts %d and %d) though the first completion could not "
                         "be lost" % (self.mode, key, q["attempt"], q2["attempt"]))
        return len(reqs)

    def run(self):
        self.tail, self.answered = Tail(self.log), Tail(self.answers)
        port_file = os.path.join(self.dir, "port")
        recv = subprocess.Popen([sys.executable, RECEIVER, "--port-file", port_file, "--log", self.log,
                                 "--answers", self.answers])
        try:
            wait_for(lambda: os.path.exists(port_file), 10, "the receiver")
            with open(port_file) as f:
                self.port = int(f.read())
            self.url = "http://127.0.0.1:%d" % self.port
            t0, kills, tries = time.time(), 0, 0
            while kills < self.a.kills:
                tries += 1
                if tries > 10 * self.a.kills:
                    fail("%s: only %d of %d kills landed in %d runs" % (self.mode, kills, self.a.kills, tries))
                kills += self.kill_one()
            t_end = time.time()
            self.to_the_end()
            t_end = time.time() - t_end
            n = self.check_end()
        finally:
            for r in self.runs:  # a run left by an unexpected error
                if r["p"].poll() is None:
                    r["p"].kill()
                    r["p"].wait()
            with open(os.path.join(self.dir, "runs.jsonl"), "w") as f:  # the timeline, to read a failure
                for r in self.runs:
                    f.write(json.dumps({k: v for k, v in r.items() if k != "p"}) + "\n")
            recv.terminate()
            recv.wait()
        if not self.mid_delivery:
            fail("%s: no kill landed mid-delivery" % self.mode)
        print("# %s %s: %d kills (%d mid-delivery, %d between retries) in %d runs, %d requests for %d events, "
              "%d acknowledged completions checked against the %.2f s window, %.1f s (%.1f s of it the run to the end)"
              % (self.a.runner, self.mode, kills, self.mid_delivery, self.between_retries, len(self.runs), n,
                 len(self.keys), self.checked, self.window, time.time() - t0, t_end))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runner", choices=("esg", "python"), required=True)
    ap.add_argument("--esg", help="the esg command (--runner esg)")
    ap.add_argument("--pythonpath", help="PYTHONPATH for import esg (--runner python)")
    ap.add_argument("--modes", default="durable,grouped")
    a = ap.parse_args()
    if a.runner == "esg" and not a.esg:
        ap.error("--runner esg needs --esg")
    a.kills = int(os.environ.get("ESG_KILLS") or 30)
    a.events = int(os.environ.get("ESG_KILL_EVENTS") or 150)
    seed = int(os.environ.get("ESG_KILL_SEED") or random.SystemRandom().randrange(1 << 32))
    print("# seed %d (replay: ESG_KILL_SEED=%d), %d kills per mode, %d events" % (seed, seed, a.kills, a.events))
    sys.stdout.flush()
    base = os.environ.get("ESG_TEST_TMP")
    if base:
        os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="kill-%s-" % a.runner, dir=base)
    try:
        for mode in a.modes.split(","):
            Sweep(a, mode, seed, tmp).run()
    except Failed as e:
        print("FAIL %s (seed %d; the logs: %s)" % (e, seed, tmp), file=sys.stderr)
        return 1
    if not os.environ.get("ESG_KILL_KEEP"):
        shutil.rmtree(tmp)  # kept when a check fails
    print("# ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
