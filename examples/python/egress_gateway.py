#!/usr/bin/env python3
"""An egress gateway: internal events -> an external HTTP API, built on esg.

For each internal event (one JSON envelope per line, or a generated demo set):

    parse -> claim (dedupe) -> latch check -> enrich (cache, read-through) -> transform -> deliver -> complete | fault

- claim: the event id, with the event as payload, so a redelivered event is skipped;
- latch: events flagged "latched": true were written on behalf of the external
  system itself (they came from it): sending them back would echo, so they are skipped;
- enrich: the external API wants the customer's name, which the event lacks. It comes
  from an esg.Cache: materialised from earlier customer events (Cache.collect), else
  loaded through a Python loader that calls the customer service (single flight,
  negative caching for unknown customers, stale-if-error when the service is down);
- deliver: esg.Egress POSTs the transformed payload with the event id as the
  Idempotency-Key, retrying 5xx/429 with backoff, in order per partition key;
  success completes the claim, a refused or exhausted delivery becomes a fault;
- faults: listed at the end, and with --resubmit-to URL sent again (same event id).

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


def make_loader(customers_url, timeout=5.0):
    """The enrichment loader: GET the customer; 404 is "known absent"."""

    def load(key, deadline=None):
        url = customers_url.replace("{key}", urllib.request.quote(key.split("/", 1)[-1]))
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.read()  # JSON text, cached as it is
        except urllib.error.HTTPError as e:
            if e.code in (404, 410):
                return esg.ABSENT
            raise  # a failed load: the stale value is served if there is one

    return load


def transform(ev, customer):
    """The transformation step: internal order event -> the external API's payload."""
    order = ev["order"]
    return {
        "externalId": ev.id,
        "orderId": order["id"],
        "amount": order["amount"],
        "customerName": customer["name"] if customer else None,
    }


class Gateway:
    def __init__(self, store, url, customers_url, **egress_options):
        self.store = store
        self.url = url
        self.cache = esg.Cache(store, ttl=300, negative_ttl=60, max_stale=3600)
        self.loader = make_loader(customers_url)
        self.egress = esg.Egress(store, on_done=self.on_done, **egress_options)
        self.counts = {"skipped-duplicate": 0, "skipped-busy": 0, "skipped-latched": 0, "collected": 0,
                       "submitted": 0, "delivered": 0, "faulted": 0, "cancelled": 0}

    def on_done(self, r):
        # runs inside run()/drain(): it must not use the store, only look at the result
        key = {"delivered": "delivered", "refused": "faulted", "exhausted": "faulted"}.get(r.outcome, "cancelled")
        self.counts[key] += 1

    def handle(self, raw):
        ev = esg.parse_event(raw)
        if ev.type == "customer-updated":  # material for enrichment, not for delivery
            if self.cache.collect(ev)[0] == "applied":
                self.counts["collected"] += 1
            return
        if esg.latch_flagged(ev):
            self.counts["skipped-latched"] += 1
            return
        c = self.store.claim(ev.id, ev, lease=60.0)
        if c.status != "new":
            self.counts["skipped-" + c.status] += 1
            return
        try:
            key = "customer/" + ev["order"]["customerId"]
            entry = self.cache.get_or_load(key, self.loader)
            payload = transform(ev, entry.value)
        except Exception as e:
            # a failure before delivery: record it as a fault and release the claim
            self.store.record_fault(ev.id, "enrich", f"{type(e).__name__}: {e}", event=ev)
            self.store.release(ev.id, c.token)
            self.counts["faulted"] += 1
            return
        self.egress.submit(self.url, payload, event_id=ev.id, partition_key=ev.partition_key,
                           claim=c, event=ev)
        self.counts["submitted"] += 1
        self.egress.run(0)  # one pass: send what can go now, without waiting

    def finish(self):
        self.egress.drain()
        return self.counts

    def resubmit_faults(self, url):
        n = 0
        for f in self.store.faults():
            if f.stage == "deliver" and f.event:
                ev = esg.parse_event(f.event)
                customer = self.cache.get("customer/" + ev["order"]["customerId"]).value
                if self.egress.resubmit(f.id, url, transform(ev, customer)):
                    n += 1
        self.egress.drain()
        return n

    def close(self):
        self.egress.close()
        self.cache.close()


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
    ap.add_argument("--resubmit-to", help="after the run, resubmit delivery faults to this URL")
    ap.add_argument("--demo", action="store_true", help="run against built-in local servers")
    a = ap.parse_args(argv)
    srv = None
    if a.demo:
        srv, base = start_demo_server()
        a.url, a.customers = base + "/orders", base + "/customers/{key}"
        a.resubmit_to = a.resubmit_to or base + "/orders-fixed"
        lines = demo_events()
    elif not (a.input and a.url and a.customers):
        ap.error("give --demo, or --input, --url and --customers")
    else:
        with open(a.input, "rb") as f:
            lines = [line for line in f if line.strip()]
    try:
        with esg.Store(a.db) as store:
            gw = Gateway(store, a.url, a.customers, backoff_base=0.05, max_attempts=4)
            for raw in lines:
                gw.handle(raw)
            counts = gw.finish()
            faults = store.faults()
            for f in faults:
                print(f"fault {f.id}: {f.event_id} at {f.stage}: {f.error} (HTTP {f.http_status}, "
                      f"{f.attempts} attempts)", file=sys.stderr)
            if a.resubmit_to:
                counts["resubmitted"] = gw.resubmit_faults(a.resubmit_to)
                counts["faults-left"] = len(store.faults())
            st = gw.cache.stats()
            counts["cache-loads"], counts["cache-hits"] = st.loads, st.hits
            gw.close()
    finally:
        if srv:
            srv.shutdown()
            srv.server_close()
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
