#!/usr/bin/env python3
"""A mock CRM for the egress example: a tiny HTTP receiver on 127.0.0.1 only.

  python3 mock_crm.py --port-file FILE [--port N] [--log FILE.jsonl]

POST/PUT /deals (any path): creates a deal from the JSON body and answers 201
{"id": "deal-<n>"}. It dedupes by the Idempotency-Key header, as a well-behaved
receiver does: a key it has seen gets the first answer again (200, header
Idempotent-Replayed: true) and creates nothing. A body with "crmFail":
"flaky" is refused with 503 (Retry-After: 0) the first time its key is seen,
"crmFail": "permanent" always gets 422. GET /contacts/<id> answers the
contacts below (404 for others), for enrichment; GET /stats the counters.
Each request is logged as a JSON line. Stops on SIGTERM or SIGINT.
"""
import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTACTS = {
    "c-1": {"id": "c-1", "name": "Ada Lovelace", "email": "ada@example.com", "segment": "enterprise"},
    "c-2": {"id": "c-2", "name": "Grace Hopper", "email": "grace@example.com", "segment": "smb"},
}

lock = threading.Lock()
state = {"seen": {}, "attempts": {}, "deals": 0, "requests": 0, "duplicates": 0, "refused": 0}
log_file = None


def log(entry):
    if log_file:
        with lock:
            log_file.write(json.dumps(entry, sort_keys=True) + "\n")
            log_file.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                s = {k: v for k, v in state.items() if k not in ("seen", "attempts")}
            return self.answer(200, s)
        if self.path.startswith("/contacts/"):
            c = CONTACTS.get(self.path[len("/contacts/"):])
            return self.answer(200, c) if c else self.answer(404, {"error": "no such contact"})
        return self.answer(404, {"error": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        key = self.headers.get("Idempotency-Key")
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        with lock:
            state["requests"] += 1
            if key and key in state["seen"]:
                state["duplicates"] += 1
                status, answer = state["seen"][key]
                replay = True
            else:
                replay = False
                n = state["attempts"][key] = state["attempts"].get(key, 0) + 1
                fail = body.get("crmFail") if isinstance(body, dict) else None
                if not isinstance(body, dict):
                    status, answer = 400, {"error": "a JSON object is required"}
                elif fail == "permanent":
                    status, answer = 422, {"error": "the CRM rejects this deal"}
                elif fail == "flaky" and n == 1:
                    status, answer = 503, {"error": "try again"}
                else:
                    state["deals"] += 1
                    status, answer = 201, {"id": "deal-%d" % state["deals"]}
                    if key:
                        state["seen"][key] = (200, answer)
                if status >= 400:
                    state["refused"] += 1
        contact = body.get("contact") if isinstance(body, dict) else None
        log({"path": self.path, "key": key, "status": status, "replayed": replay,
             "deal": body.get("dealId") if isinstance(body, dict) else None,
             "contact": contact.get("name") if isinstance(contact, dict) else None})
        headers = [("Idempotent-Replayed", "true")] if replay else []
        if status == 503:
            headers.append(("Retry-After", "0"))
        self.answer(status, answer, headers)

    do_PUT = do_POST


def main():
    global log_file
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log")
    a = ap.parse_args()
    if a.log:
        log_file = open(a.log, "a")
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True

    def stop(*_):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    import os
    os.replace(a.port_file + ".tmp", a.port_file)
    srv.serve_forever()
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
