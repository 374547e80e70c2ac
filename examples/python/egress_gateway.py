#!/usr/bin/env python3
"""An egress gateway: internal events -> an external HTTP API, on esg.Gateway.

For each internal event (one JSON envelope per line, or a generated demo set), libesg's
gateway pipeline runs:

    parse -> claim (dedupe) -> latch check -> enrich (cache, read-through) -> transform -> deliver -> complete | fault

- claim: the event id, with the SHA-256 of its bytes, so a redelivered event is a duplicate;
- latch: events flagged "latched": true were written on behalf of the external system
  itself (they came from it): sending them back would echo, so they are suppressed;
- enrich: the external API wants the customer's name, which the order lacks. It comes from
  the gateway's cache: materialised from earlier customer-updated events (collect), else
  loaded through a Python loader that calls the customer service (one load per key,
  negative caching for unknown customers, stale-if-error when the service is down);
- transform: order -> the API's payload; a customer event is dropped (it only fed the cache);
- deliver: the HTTP sink POSTs the payload with the event id as Idempotency-Key, retrying
  5xx/429 with backoff, in order per partition key; success completes the claim, a refused
  or exhausted delivery becomes a fault (stage "deliver") and completes the claim with it;
- faults: listed at the end, and with --resubmit-to URL run again through a gateway whose
  sink posts there (same event ids: the receiver can dedupe).

Run the self-contained demo (it starts a flaky receiver and a customer service on
127.0.0.1 in threads):

    python3 egress_gateway.py --db /tmp/egress.db --demo

or against real endpoints:

    python3 egress_gateway.py --db gw.db --input events.jsonl --url https://api.example.com/orders \\
        --customers https://crm.example.com/customers/{key}
"""
import argparse
import http.server
import json
import sys
import threading
import urllib.error
import urllib.request

import esg


def make_loader(customers_url, calls, timeout=5.0):
    """The enrichment loader: GET the customer; 404 is "known absent". Counts its calls."""

    def load(key):
        calls.append(key)
        url = customers_url.replace("{key}", urllib.request.quote(key.split("/", 1)[-1]))
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.read()  # JSON text, cached as it is
        except urllib.error.HTTPError as e:
            if e.code in (404, 410):
                return esg.ABSENT
            raise  # a failed load: the stale value is served if there is one, else a fault

    return load


def customer_key(ev, ctx):
    """Which cached customer an order needs (None: no lookup)."""
    return "customer/" + ev["order"]["customerId"] if "order" in ev else None


def transform(ev, ctx):
    """The transformation step: internal order event -> the external API's payload."""
    if ev["type"] == "customer-updated":
        return None  # material for enrichment (collected), not for delivery: dropped
    order, customer = ev["order"], ev.get("customer")
    return {
        "externalId": ev["id"],
        "orderId": order["id"],
        "amount": order["amount"],
        "customerName": customer["name"] if customer else None,
    }


def make_gateway(store, url, loader, rerender=False, **egress_options):
    return esg.Gateway(
        store,
        name="orders",
        latch={"flag": True},                  # "latched": true came from the other side: an echo
        enrich={
            "cache": {"ttl": 300, "negative_ttl": 60, "max_stale": 3600, "collect_field": "customer"},
            "collect": True,                   # customer-updated events fill the cache
            "key": customer_key,
            "load": loader,                    # a miss reads through the customer service
            "into": "customer",                # the value goes to ev["customer"]
        },
        transform=transform,
        sink=esg.sink.http(url, rerender=rerender, **egress_options),
    )


# ------------------------------------------------------------------ the demo --

class DemoServer(http.server.BaseHTTPRequestHandler):
    """/orders: 503 for the first attempt of every third order, 400 for amounts < 0.
    /customers/<id>: the customer, 404 for unknown ones."""
    protocol_version = "HTTP/1.1"
    CUSTOMERS = {"c1": {"id": "c1", "name": "Ada"}, "c2": {"id": "c2", "name": "Grace"}}

    def log_message(self, *a):
        pass

    def reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        cid = self.path.rsplit("/", 1)[-1]
        c = self.CUSTOMERS.get(cid)
        self.reply(200, json.dumps(c).encode()) if c else self.reply(404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        with srv.lock:
            srv.attempts[body["orderId"]] = n = srv.attempts.get(body["orderId"], 0) + 1
        if self.path.startswith("/orders-fixed"):
            self.reply(201)
        elif body["amount"] < 0:
            self.reply(400, b'{"error":"negative amount"}')
        elif int(body["orderId"][1:]) % 3 == 0 and n == 1:
            self.reply(503)
        else:
            self.reply(201)


def demo_events():
    ts = 1_700_000_000_000
    evs = [{"id": "cust-c1-1", "type": "customer-updated", "timestamp": ts, "partitionKey": "c1",
            "customer": {"id": "c1", "name": "Ada Lovelace"}}]
    for i in range(1, 10):
        cid = ["c1", "c2", "c9"][i % 3]
        evs.append({"id": f"order-evt-{i}", "type": "order-placed", "timestamp": ts + i, "partitionKey": cid,
                    "order": {"id": f"o{i}", "customerId": cid, "amount": -5 if i == 5 else 10 * i}})
    evs.append(dict(evs[3]))  # a redelivery
    evs.append({"id": "order-evt-echo", "type": "order-placed", "timestamp": ts + 99, "partitionKey": "c1",
                "latched": True, "order": {"id": "o99", "customerId": "c1", "amount": 1}})
    return [json.dumps(e).encode() for e in evs]


def start_demo_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DemoServer)
    srv.daemon_threads = True
    srv.lock, srv.attempts = threading.Lock(), {}
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--input", help="events, one JSON envelope per line")
    ap.add_argument("--url", help="where to POST the orders")
    ap.add_argument("--customers", help="customer service URL, {key} replaced by the customer id")
    ap.add_argument("--resubmit-to", help="after the run, resubmit the faults through a gateway posting to this URL")
    ap.add_argument("--demo", action="store_true", help="run against built-in local servers")
    a = ap.parse_args(argv)
    srv = None
    if a.demo:
        srv, base = start_demo_server()
        a.url, a.customers = base + "/orders", base + "/customers/{key}"
        a.resubmit_to = a.resubmit_to or base + "/orders-fixed"
        source = esg.source.lines(demo_events())
    elif not (a.input and a.url and a.customers):
        ap.error("give --demo, or --input, --url and --customers")
    else:
        source = esg.source.jsonl(a.input)
    loads = []
    fast = dict(backoff_base=0.05, max_attempts=4)
    try:
        with esg.Store(a.db) as store:
            with make_gateway(store, a.url, make_loader(a.customers, loads), **fast) as gw:
                counts = dict(gw.run(source))  # to the end of the input, then every delivery
            for f in store.faults():
                print(f"fault {f.id}: {f.event_id} at {f.stage}: {f.error.splitlines()[0]} (HTTP {f.http_status}, "
                      f"{f.attempts} attempts)", file=sys.stderr)
            if a.resubmit_to:
                # the "fixed" pipeline: the same steps, delivering to the other URL; rerender,
                # since a resubmission otherwise sends the request its first attempt stored
                with make_gateway(store, a.resubmit_to, make_loader(a.customers, loads), rerender=True, **fast) as fixed:
                    outcomes = [fixed.resubmit(f.id) for f in store.faults()]
                counts["resubmitted"] = outcomes.count("delivered")
                counts["delivered"] += fixed.stats["delivered"]
                counts["faults-left"] = len(store.faults())
            counts["cache-loads"] = len(loads)
    finally:
        if srv:
            srv.shutdown()
            srv.server_close()
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
