#!/usr/bin/env python3
"""A webhook receiver on the standard library's http.server, built on esg.

Each POST is verified as a Standard Webhooks v1 request (HMAC-SHA256 by libesg's
C API; several secrets accepted during a rotation), deduplicated by its
webhook-id through a claim, transformed into an internal event with a
deterministic id and stored in the event log. Answers:

    200 {"status": "processed"}   first delivery, handled
    200 {"status": "duplicate"}   a redelivery: already handled, nothing done again
    400                           malformed request (missing headers, body not JSON)
    401                           forged, tampered, unknown secret, or stale timestamp
    409                           the same webhook is being handled right now: retry later
    500                           the handler failed; the claim is released so a retry runs

Run:  python3 webhook_handler.py --db /tmp/hooks.db --port 8080 --secret whsec_...
(or set WEBHOOK_SECRET). The handler threads each use their own Store.
"""
import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import esg


def to_internal_event(msg_id, body):
    """The transformation step: an external webhook payload -> an internal event.

    The id is derived from the webhook id, so a replay yields the same event.
    """
    return {
        "id": esg.uuid5("webhook/" + msg_id),
        "type": "webhook-" + str(body.get("type", "received")),
        "timestamp": int(body.get("timestamp", 0)) if isinstance(body.get("timestamp"), int) else 0,
        "partitionKey": str(body.get("partitionKey") or body.get("id") or msg_id),
        "raw": body,
    }


class WebhookHandler(BaseHTTPRequestHandler):
    """Verifies, dedupes and handles one webhook per request (see the module doc)."""

    server_version = "esg-webhook/1"

    def log_message(self, fmt, *args):  # quiet unless asked
        if self.server.verbose:
            super().log_message(fmt, *args)

    def reply(self, code, doc):
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        try:
            msg_id = self.server.webhook.verify(self.headers, body)
        except (esg.SignatureError, esg.TimeoutError) as e:
            return self.reply(401, {"error": e.errmsg})
        except esg.InvalidArgumentError as e:
            return self.reply(400, {"error": e.errmsg})
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as e:
            return self.reply(400, {"error": str(e)})

        store = self.server.stores.get()  # this thread's Store
        claim = store.claim("webhook:" + msg_id, body, lease=30.0, ttl=self.server.dedupe_ttl)
        if claim.status == "duplicate":
            return self.reply(200, {"status": "duplicate", "result": json.loads(claim.result or b"null")})
        if claim.status == "busy":
            return self.reply(409, {"error": "this webhook is being handled; retry later"})
        try:
            ev = to_internal_event(msg_id, doc)
            with store.batch():  # emit and complete atomically
                store.put_event(ev)
                store.complete("webhook:" + msg_id, claim.token, {"event": ev["id"]})
        except Exception as e:  # let the sender's retry run it again
            store.release("webhook:" + msg_id, claim.token)
            return self.reply(500, {"error": str(e)})
        return self.reply(200, {"status": "processed", "event": ev["id"]})


def make_server(db, secrets, host="127.0.0.1", port=0, tolerance=300, dedupe_ttl=7 * 86400.0, verbose=False):
    """A ThreadingHTTPServer receiving webhooks into the store at db. port 0 picks a free port."""
    server = ThreadingHTTPServer((host, port), WebhookHandler)
    server.webhook = esg.Webhook(secrets, tolerance=tolerance)
    server.stores = esg.ThreadLocalStore(db)
    server.dedupe_ttl = dedupe_ttl
    server.verbose = verbose
    return server


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", default="webhooks.db")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--secret", action="append", help="accepted secret (repeat during a rotation)")
    a = p.parse_args(argv)
    secrets = a.secret or [s for s in [os.environ.get("WEBHOOK_SECRET")] if s]
    if not secrets:
        p.error("give --secret or set WEBHOOK_SECRET (make one with: python3 -c 'import esg; print(esg.webhook_secret())')")
    server = make_server(a.db, secrets, a.host, a.port, verbose=True)
    print(f"listening on http://{a.host}:{server.server_address[1]}/", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.stores.close()


if __name__ == "__main__":
    main()
