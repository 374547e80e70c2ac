"""The scenario pipeline in Python, run by `python3 -m esg run` (tests/README.md, "Scenarios"):

    SCEN_CONFIG=config.json python3 -m esg run gateway.py -i events.jsonl --db store.db

The same steps as gateway_c.c and gateway.lua: only order-* events; claim "evt:<id>"; the
order as an entity at its version (its document: the order); content latches of
"order:<id>" (read from "shop", written to "crm"); the customer enriched from a fixed table
by a loader (its value counts the loads of this process, so a cache hit shows as an older
count); a transform that refuses orders marked fail = "transform" and drops those marked
drop; PUT to the receiver.
"""
import json
import os

import esg

with open(os.environ["SCEN_CONFIG"], encoding="utf-8") as f:
    cfg = json.load(f)

counts = {"loads": 0, "renders": 0}


def load(key):
    c = cfg["customers"].get(key.split("/", 1)[1])
    if c is None:
        return esg.ABSENT
    counts["loads"] += 1
    return {"name": c["name"], "tier": c["tier"], "loads": counts["loads"]}


def transform(ev, ctx):
    order = ev["order"]
    if order.get("fail") == "transform":
        raise RuntimeError("transform refused: " + ev["id"])
    if order.get("drop"):
        return None
    counts["renders"] += 1
    out = {"event": ev["id"], "order": order["id"], "version": order["version"], "amount": order["amount"],
           "customer": ev["customer"], "n": counts["renders"]}
    if "reply" in ev:
        out["reply"] = ev["reply"]
    return out


gateway = dict(
    name="scenarios",
    filter=lambda ev, ctx: ev["type"].startswith("order-"),
    key=lambda ev, ctx: "evt:" + ev["id"],
    lease=cfg["lease"],
    entity=lambda ev, ctx: ("order:" + ev["order"]["id"], ev["order"]["version"], ev["order"]),
    latch={"key": lambda ev, ctx: "order:" + ev["order"]["id"], "from": "shop", "to": "crm",
           "doc": lambda ev, ctx: ev["order"]},
    enrich={"key": lambda ev, ctx: "customer/" + ev["order"]["customer"], "load": load, "into": "customer",
            "required": True},
    transform=transform,
    sink=esg.sink.http(cfg["url"], method="PUT", headers={"X-Gateway": "scenarios"}, timeout=cfg["timeout"],
                       max_attempts=cfg["max_attempts"], backoff_base=cfg["backoff_base"],
                       backoff_cap=cfg["backoff_cap"]),
)
