"""esg.Egress against a real local HTTP server (http.server on 127.0.0.1 in a thread)."""
import hashlib
import http.server
import json
import threading

import pytest

import esg
from conftest import event


class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the engine expects

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        srv = self.server
        key = self.headers.get("Idempotency-Key")
        with srv.lock:
            srv.requests.append((self.path, key, body, dict(self.headers)))
            srv.seen[(self.path, key)] = srv.seen.get((self.path, key), 0) + 1
            count = srv.seen[(self.path, key)]
        path = self.path.split("?")[0]
        if path == "/ok":
            self.answer(204)
        elif path == "/json":
            self.answer(200, b'{"accepted":true}')
        elif path == "/bad":
            self.answer(400, b'{"error":"bad request"}')
        elif path == "/fail":
            self.answer(500)
        elif path == "/flaky":  # two failures per key, then success
            self.answer(503 if count <= 2 else 200, b"ok")
        elif path == "/throttle":  # 429 with Retry-After once per key
            self.answer(429, headers={"Retry-After": "0"}) if count == 1 else self.answer(204)
        else:
            self.answer(404)

    def answer(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.requests, srv.seen = [], {}
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(5)


FAST = dict(backoff_base=0.001, backoff_cap=0.01, timeout=5.0, connect_timeout=2.0)


def test_delivers_and_completes_the_claim(store, server):
    ev = esg.parse_event(event(1))
    c = store.claim(ev.id, ev)
    with esg.Egress(store, **FAST) as eg:
        eg.submit_event(ev, server.url + "/json", claim=c, context={"mine": 1})
        eg.drain()
        [r] = eg.results()
        assert isinstance(r, esg.EgressResult)
        assert (r.event_id, r.outcome, r.http_status, r.attempts, r.error, r.fault_id, r.store_status) == (
            "evt-1", "delivered", 200, 1, "", None, 0)
        assert r.body == b'{"accepted":true}' and r.context == {"mine": 1}
        st = eg.stats()
        assert (st.submitted, st.delivered, st.faulted, st.in_flight, st.queued) == (1, 1, 0, 0, 0)
    path, key, body, headers = server.requests[0]
    assert (path, key, body) == ("/json", "evt-1", ev.json)
    assert headers["Content-Type"] == "application/json"
    dup = store.claim(ev.id, ev)  # the claim's result: the status and the answer's digest
    assert dup.status == "duplicate"
    assert json.loads(dup.result) == {"status": 200, "sha256": hashlib.sha256(b'{"accepted":true}').hexdigest()}


def test_an_empty_answer_completes_with_its_status_alone(store, server):
    ev = esg.parse_event(event(2))
    with esg.Egress(store, **FAST) as eg:
        eg.submit_event(ev, server.url + "/ok", claim=store.claim(ev.id, ev))
        eg.drain()
        [r] = eg.results()
        assert (r.outcome, r.http_status, r.body, r.store_status) == ("delivered", 204, b"", 0)
    assert json.loads(store.claim(ev.id, ev).result) == {"status": 204}


def test_partition_key_keeps_order(store, server):
    got = []
    with esg.Egress(store, on_done=got.append, max_in_flight=8, **FAST) as eg:
        for i in range(20):
            eg.submit_event(event(i, partitionKey="same"), server.url + "/ok")
        eg.drain()
    assert [r.outcome for r in got] == ["delivered"] * 20
    assert [k for _, k, _, _ in server.requests] == [f"evt-{i}" for i in range(20)]


def test_refused_becomes_a_fault_and_releases_the_claim(store, server):
    ev = esg.parse_event(event(2))
    c = store.claim(ev.id, ev)
    with esg.Egress(store, **FAST) as eg:
        eg.submit_event(ev, server.url + "/bad", claim=c)
        eg.drain()
        [r] = eg.results()
    assert r.outcome == "refused" and r.http_status == 400 and r.attempts == 1 and r.fault_id
    assert "400" in r.error
    [f] = store.faults()
    assert (f.id, f.event_id, f.http_status, f.attempts) == (r.fault_id, "evt-2", 400, 1)
    assert f.event == ev.json
    assert store.claim(ev.id, ev).status == "new"  # released: another worker may retry


def test_retries_then_exhausts(store, server):
    retries = []
    with esg.Egress(store, max_attempts=3, on_retry=lambda *a: retries.append(a), **FAST) as eg:
        eg.submit(server.url + "/fail", b'{"x":1}', event_id="e-5")
        eg.drain()
        [r] = eg.results()
    assert r.outcome == "exhausted" and r.attempts == 3 and r.http_status == 500
    assert [(a[0], a[1], a[2]) for a in retries] == [("e-5", 1, 500), ("e-5", 2, 500)]
    assert all(a[3] >= 0 for a in retries)
    assert store.get_fault(r.fault_id).attempts == 3


def test_retries_then_delivers(store, server):
    with esg.Egress(store, **FAST) as eg:
        eg.submit(server.url + "/flaky", "{}", event_id="e-6")
        eg.submit(server.url + "/throttle", "{}", event_id="e-7")
        eg.drain()
        res = {r.event_id: r for r in eg.results()}
    assert res["e-6"].outcome == "delivered" and res["e-6"].attempts == 3
    assert res["e-7"].outcome == "delivered" and res["e-7"].attempts == 2
    assert store.faults() == []


def test_resubmit_a_fault(store, server):
    with esg.Egress(store, **FAST) as eg:
        eg.submit_event(event(8), server.url + "/bad")
        eg.drain()
        [r] = eg.results()
        assert eg.resubmit(r.fault_id, server.url + "/ok", context="again") is True
        eg.drain()
        [r2] = eg.results()
        assert eg.resubmit(r.fault_id, server.url + "/ok") is False
    assert (r2.event_id, r2.outcome, r2.attempts, r2.context) == ("evt-8", "delivered", 2, "again")
    assert store.faults() == []
    assert server.requests[-1][1] == "evt-8"


def test_callback_may_submit_but_not_use_the_store(store, server):
    got = []

    def on_done(r):
        got.append(r.event_id)
        if r.event_id == "first":
            eg.submit(server.url + "/ok", "{}", event_id="second")

    with esg.Egress(store, on_done=on_done, **FAST) as eg:
        eg.submit(server.url + "/ok", "{}", event_id="first")
        eg.drain()
    assert got == ["first", "second"]

    def uses_store(r):
        store.faults()

    with esg.Egress(store, on_done=uses_store, **FAST) as eg:
        eg.submit(server.url + "/ok", "{}", event_id="x")
        with pytest.raises(esg.StateError):
            eg.drain()


def test_callback_exception_propagates_from_drain(server):
    class Boom(Exception):
        pass

    def on_done(r):
        raise Boom(r.event_id)

    with esg.Egress(on_done=on_done, **FAST) as eg:  # no store: outcomes only
        eg.submit(server.url + "/ok", "{}", event_id="a")
        with pytest.raises(Boom):
            eg.drain()
        assert eg.stats().delivered == 1


def test_run_close_and_cancel(store, server):
    ev = esg.parse_event(event(9))
    c = store.claim(ev.id, ev)
    eg = esg.Egress(store, rate=0.001, burst=1, **FAST)  # one token: the second request waits
    eg.submit(server.url + "/ok", "{}", event_id="first")
    eg.submit_event(ev, server.url + "/ok", claim=c)
    for _ in range(50):  # until the first is delivered (the second waits for a token)
        assert eg.run(0.1) is False
        if eg.stats().delivered == 1:
            break
    eg.close()
    eg.close()
    outcomes = {r.event_id: r.outcome for r in eg.results()}
    assert outcomes == {"first": "delivered", "evt-9": "cancelled"}
    assert eg.closed
    with pytest.raises(esg.StateError):
        eg.submit(server.url + "/ok", "{}", event_id="late")
    assert store.claim(ev.id, ev).status == "new"  # the cancelled delivery released its claim


def test_store_close_closes_the_engine(db, server):
    s = esg.Store(db)
    eg = esg.Egress(s)
    eg.submit(server.url + "/ok", "{}", event_id="never")
    s.close()
    assert eg.closed
    assert [r.outcome for r in eg.results()] == ["cancelled"]


def test_closing_the_store_first_cancels_queued_deliveries(db, server):
    # libesg detaches the engine: its deliveries end cancelled while the store is still open
    # (claims released), their callbacks run inside close (with the GIL taken back) and find the
    # store in use; the engine then raises StateError until its own close frees it
    import gc
    s = esg.Store(db)
    c1, c2 = s.claim("k1"), s.claim("k2")
    seen, errors = [], []

    def on_done(r):
        seen.append((r.event_id, r.outcome, r.store_status))
        try:
            s.claim("x")
        except esg.StateError as e:
            errors.append(str(e))

    eg = esg.Egress(s, on_done=on_done, **FAST)
    eg.submit(server.url + "/ok", "{}", event_id="q1", claim=c1, partition_key="p")
    eg.submit(server.url + "/ok", "{}", event_id="q2", claim=c2, partition_key="p")  # queued behind q1
    s.close()
    assert sorted(seen) == [("q1", "cancelled", 0), ("q2", "cancelled", 0)]
    assert len(errors) == 2 and all("in use" in e for e in errors)
    assert eg.closed
    for call in (eg.run, eg.drain, lambda: eg.submit(server.url + "/ok", "{}", event_id="q3"),
                 lambda: eg.resubmit(1, server.url + "/ok")):
        with pytest.raises(esg.StateError):
            call()
    assert eg.stats().cancelled == 2
    eg.close()
    eg.close()
    assert len(seen) == 2 and server.requests == []
    with esg.Store(db) as s2:
        assert s2.claim("k1").status == "new" and s2.claim("k2").status == "new"  # released
        eg2 = esg.Egress(s2, on_done=lambda r: seen.append((r.event_id, r.outcome, 0)))
        eg2.submit(server.url + "/ok", "{}", event_id="q4")
    assert seen[-1] == ("q4", "cancelled", 0) and eg2.closed
    del eg, eg2  # the detached engines' finalizers free them, running nothing
    gc.collect()
    assert len(seen) == 3


def test_bad_requests(store, server):
    with esg.Egress(store) as eg:
        with pytest.raises(TypeError):
            eg.submit(server.url + "/ok", "{}")  # no event_id
        with pytest.raises(esg.InvalidArgumentError):
            eg.submit("", "{}", event_id="x")
        with pytest.raises(TypeError):
            eg.submit(server.url, "{}", event_id="x", headers=[1])
        with pytest.raises(esg.InvalidArgumentError):
            eg.submit(server.url, "{}", event_id="x", claim=store.claim("k") and store.claim("k"))
        eg.submit(server.url + "/ok", {"a": 1}, event_id="h", headers={"X-Test": "1"}, method="PUT")
    with pytest.raises(TypeError):
        esg.Egress("not a store")


def test_policy_functions():
    assert esg.egress_retryable(503) and esg.egress_retryable(429) and esg.egress_retryable(408)
    assert not esg.egress_retryable(400) and not esg.egress_retryable(204)
    assert esg.egress_retryable(0, curl_code=7)  # could not connect
    assert esg.parse_retry_after("5") == 5.0
    assert esg.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    with pytest.raises(esg.InvalidArgumentError):
        esg.parse_retry_after("soon")


def test_injected_clock_drives_the_backoff(store, server):
    from conftest import FakeClock

    clock = FakeClock()
    retries = []
    with esg.Egress(store, clock=clock, max_attempts=2, backoff_base=10.0, backoff_cap=10.0,
                    max_elapsed=100.0, on_retry=lambda *a: retries.append(a)) as eg:
        eg.submit(server.url + "/fail", "{}", event_id="slow")
        assert eg.run(0.3) is False          # the backoff waits for the clock, not for real time
        assert len(retries) == 1 and eg.stats().queued == 1
        clock.advance(20)
        eg.drain()
        [r] = eg.results()
    assert r.outcome == "exhausted" and r.attempts == 2
    assert r.last_attempt >= r.first_attempt and r.first_attempt == pytest.approx(1_700_000_000.0)


def test_clock_exception_is_raised_by_run(server):
    def bad():
        raise RuntimeError("clock broke")

    with pytest.raises(RuntimeError):
        with esg.Egress(clock=bad) as eg:
            eg.submit(server.url + "/ok", "{}", event_id="x")
            eg.drain()


def _run_isolated(code, timeout=30):
    """Runs code in a fresh interpreter (a deadlock there cannot hang the tests): its stdout."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("deadlocked: the scenario did not finish in %d s" % timeout)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_on_retry_and_the_clock_may_submit():
    # Both used to deadlock: they did not mark the engine as inside a callback, so
    # submit waited for the engine lock that run() on the same thread was holding.
    out = _run_isolated(r'''
import esg, time
URL = "http://127.0.0.1:1/"  # refused at once: retried, then exhausted
eg = None
sent = []
def on_retry(event_id, attempt, status, delay, error):
    if not sent:
        sent.append(1)
        eg.submit(URL, b"{}", event_id="from-retry")
ticks = []
def clock():
    if eg is not None and not ticks:
        ticks.append(1)
        eg.submit(URL, b"{}", event_id="from-clock")
    return time.time()
done = []
eg = esg.Egress(on_retry=on_retry, clock=clock, on_done=lambda r: done.append(r.event_id),
                max_attempts=2, backoff_base=0.001, backoff_cap=0.01, connect_timeout=2.0)
eg.submit(URL, b"{}", event_id="first")
eg.drain()
eg.close()
print(sorted(done))
''')
    assert out.strip() == "['first', 'from-clock', 'from-retry']"
