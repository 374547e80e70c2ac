"""What a Python gateway left in its store, as run.py compares it (tests/README.md, "Scenarios"):

    python3 dump.py config.json store.db > result.json

Read through the Python binding: the run records ("esg.runs"), every fault record, the
claims, entities and latches the config's "dump" names. A claim is read by claiming it
without a payload check: "new" means there was none (the claim is released again).
"""
import json
import sys

import esg
from esg.__main__ import COUNTERS, RUN_KEY


def claim_of(store, key):
    c = store.claim(key, None, lease=1.0, ttl=1.0)
    if c.status == "new":
        store.release(key, c.token)
        return "absent"
    if c.status == "busy":
        return "busy"
    return {"result": c.result.decode("utf-8") if c.result is not None else None}


def main(config, path):
    with open(config, encoding="utf-8") as f:
        want = json.load(f)["dump"]
    out = {"runs": [], "faults": [], "claims": {}, "entities": {}, "latches": {}}
    with esg.Store(path) as store:
        for rec in store.events(RUN_KEY):
            run = rec["run"]
            out["runs"].append({"kind": run["kind"], "counters": {k: run[k] for k in COUNTERS}})
        for f in store.faults():
            out["faults"].append({"id": f.id, "event_id": f.event_id, "stage": f.stage, "error": f.error,
                                  "http_status": f.http_status, "attempts": f.attempts,
                                  "event": f.event.decode("utf-8") if f.event is not None else None,
                                  "first_attempt": f.first_attempt, "last_attempt": f.last_attempt})
        for key in want["claims"]:
            out["claims"][key] = claim_of(store, key)
        for key in want["entities"]:
            e = store.get_entity(key, raw=True)
            out["entities"][key] = None if e is None else {"version": e.version, "doc": e.doc.decode("utf-8")}
        for key, side in want["latches"]:
            out["latches"][key + " " + side] = store.latch_pending(key, side)
    json.dump(out, sys.stdout, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
