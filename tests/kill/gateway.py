"""The gateway `python3 -m esg run` runs in the kill sweep (run_kill.py): every event to the
receiver at $ESG_KILL_URL. The transform renders differently at every call (the pid and a
counter, in the body and the path), so a request rendered twice would show at the receiver;
the short leases let the next run take a killed run's claims over soon."""
import itertools
import os

import esg

URL = os.environ["ESG_KILL_URL"]
renders = itertools.count(1)


def transform(ev, ctx):
    return {"id": ev["id"], "render": "%d-%d" % (os.getpid(), next(renders)), "reply": ev.get("reply")}


gateway = dict(
    name="kill-python",
    lease=0.15,
    transform=transform,
    sink=esg.sink.http(lambda out, ctx: URL + "/in/" + out["render"], headers=["X-Kill-Runner: python"],
                       backoff_base=0.005, backoff_cap=0.05, max_attempts=50, max_elapsed=120, timeout=10,
                       claim_lease=0.15),
)
