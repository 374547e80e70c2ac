"""Resubmits every fault of a Python gateway's store (tests/README.md, "Scenarios"):

    SCEN_CONFIG=config.json python3 resubmit.py gateway.py store.db

`python3 -m esg` has no `faults resubmit`: this is its equivalent on esg.Gateway, with
the script's own keywords, and it stores the run record `esg faults resubmit` stores
(kind "resubmit"), so the three languages are read back alike.
"""
import os
import runpy
import sys
import time

import esg
from esg.__main__ import COUNTERS, RUN_KEY, RUN_TYPE


def main(script, path):
    spec = dict(runpy.run_path(script)["gateway"])
    with esg.Store(path) as store:
        started = int(round(store.now() * 1000))
        run_id = esg.uuid5("esg.run/%s/%d/%d/%r" % (script, started, os.getpid(), time.time()))
        # fault records say which run replaced them, as `esg faults resubmit` writes them
        with esg.Gateway(store, fault_note="script %s, run %s" % (script, run_id), **spec) as gw:
            for f in store.faults():
                gw.resubmit(f.id)
        c = gw.stats
        store.put_event({"id": esg.uuid5("esg.run/" + run_id), "type": RUN_TYPE,
                         "timestamp": int(round(store.now() * 1000)), "partitionKey": RUN_KEY,
                         "run": dict({k: c[k] for k in COUNTERS}, script=script, name=spec.get("name"),
                                     source="faults", started=started, kind="resubmit")}, RUN_KEY)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
