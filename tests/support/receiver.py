#!/usr/bin/env python3
"""A scripted HTTP receiver for the tests: 127.0.0.1 only, every request logged.

  python3 receiver.py --port-file FILE --log FILE.jsonl [--answers FILE.jsonl] [--port N]

Any method and path. What it answers is scripted by the request's own JSON body, so one
receiver serves every language's gateway alike: a body member "reply" is a list, one entry
per attempt of the request's Idempotency-Key (the last entry repeats), each an HTTP status
or an object {"status": N, "retry_after": "S", "delay_ms": MS} (delay_ms: the answer waits,
for timeouts). No "reply", or a body that is not a JSON object: 200. A request without an
Idempotency-Key counts its attempts by its body.

Each request is one JSON line in the log, written before the answer: method, path,
key, attempt (1-based), status, headers (lower-cased names, the ones a gateway sets:
content-type, idempotency-key and every x-*), body (the bytes as text, or as "b64:..." when
they are not UTF-8), t (when it was received: epoch seconds), peer (the client's port: one
connection of one client process). With --answers, each answer is then one line of that
file once written (key, attempt, status, t: when its last byte went to the socket, ok:
false when the client had gone): a crash test tells from it what a killed client may have
heard. Stops on SIGTERM or SIGINT; a delayed answer still waiting is then dropped, so
stopping never waits for it. Importable: start(log_path, answers_path=None) runs one in a
thread of the caller and returns (url, stop).
"""
import argparse
import base64
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a delayed answer (delay_ms) must not hold up the stop

    def __init__(self, port, log_path, answers_path=None):
        super().__init__(("127.0.0.1", port), Handler)
        self.lock = threading.Lock()
        self.attempts = {}
        self.stopping = threading.Event()
        self.log = open(log_path, "a", encoding="utf-8")
        self.answers = open(answers_path, "a", encoding="utf-8") if answers_path else None

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return  # a client gone mid-request (killed, or timed out): not the receiver's error
        super().handle_error(request, client_address)

    def close_logs(self):
        self.log.close()
        if self.answers:
            self.answers.close()


def reply_for(body, attempt):
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return 200, None, 0
    plan = doc.get("reply") if isinstance(doc, dict) else None
    if not isinstance(plan, list) or not plan:
        return 200, None, 0
    r = plan[min(attempt, len(plan)) - 1]
    if isinstance(r, int):
        return r, None, 0
    return int(r.get("status", 200)), r.get("retry_after"), int(r.get("delay_ms", 0))


def text_of(body):
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return "b64:" + base64.b64encode(body).decode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def handle_any(self):
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        received = time.time()
        key = self.headers.get("Idempotency-Key")
        with srv.lock:
            slot = key if key is not None else "body:" + text_of(body)
            attempt = srv.attempts[slot] = srv.attempts.get(slot, 0) + 1
            status, retry_after, delay_ms = reply_for(body, attempt)
            headers = {k.lower(): v for k, v in self.headers.items()
                       if k.lower() in ("content-type", "idempotency-key") or k.lower().startswith("x-")}
            srv.log.write(json.dumps({"method": self.command, "path": self.path, "key": key,
                                      "attempt": attempt, "status": status, "headers": headers,
                                      "body": text_of(body), "t": received,
                                      "peer": self.client_address[1]}, sort_keys=True) + "\n")
            srv.log.flush()
        if delay_ms and srv.stopping.wait(delay_ms / 1000.0):
            return  # stopping: no answer
        data = json.dumps({"status": status}).encode()
        ok = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            ok = False  # the client gave up (a timeout, or it was killed)
        if srv.answers:
            done = time.time()
            with srv.lock:
                srv.answers.write(json.dumps({"key": key, "attempt": attempt, "status": status, "t": done,
                                              "ok": ok}, sort_keys=True) + "\n")
                srv.answers.flush()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = handle_any


def start(log_path, port=0, answers_path=None):
    """Runs a receiver in a thread: returns (base url, stop function)."""
    srv = Receiver(port, log_path, answers_path)
    # a short poll interval: stop() (shutdown) waits for the loop to look
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()

    def stop():
        srv.stopping.set()
        srv.shutdown()
        srv.server_close()
        srv.close_logs()
    return "http://127.0.0.1:%d" % srv.server_address[1], stop


def requests(log_path):
    """The logged requests, in order, as dicts."""
    with open(log_path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--answers", help="log each answer once written (key, attempt, status, t, ok)")
    a = ap.parse_args()
    srv = Receiver(a.port, a.log, a.answers)

    def stop(*_):
        srv.stopping.set()
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.replace(a.port_file + ".tmp", a.port_file)
    srv.serve_forever(poll_interval=0.05)
    srv.server_close()
    srv.close_logs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
