"""Standard Webhooks through the binding, and the http.server example end to end over 127.0.0.1."""
import http.client
import json
import threading
import time

import pytest

import esg


def test_sign_verify_rotation_and_failures():
    old, new = esg.webhook_secret(), esg.webhook_secret()
    assert old.startswith("whsec_") and old != new
    sig = esg.webhook_sign(old, "msg_1", 1700000000, b'{"a":1}')
    assert sig.startswith("v1,")
    esg.webhook_verify([new, old], "msg_1", "1700000000", sig, b'{"a":1}', now=1700000010)
    esg.webhook_verify(old, "msg_1", 1700000000, "v1a,xxx " + sig, '{"a":1}', now=1700000000)
    with pytest.raises(esg.SignatureError) as ei:
        esg.webhook_verify(new, "msg_1", "1700000000", sig, b'{"a":1}', now=1700000000)
    assert ei.value.errmsg and ei.value.code == -15
    with pytest.raises(esg.SignatureError):
        esg.webhook_verify(old, "msg_2", "1700000000", sig, b'{"a":1}', now=1700000000)
    with pytest.raises(esg.TimeoutError) as ei:
        esg.webhook_verify(old, "msg_1", "1700000000", sig, b'{"a":1}', now=1700001000)
    assert isinstance(ei.value, TimeoutError) and "too old" in str(ei.value)
    esg.webhook_verify(old, "msg_1", "1700000000", sig, b'{"a":1}', now=1700001000, tolerance=2000)
    with pytest.raises(esg.InvalidArgumentError):
        esg.webhook_verify(old, "msg_1", "soon", sig, b'{"a":1}', now=1700000000)
    with pytest.raises(esg.InvalidArgumentError):
        esg.webhook_sign("whsec_!!!", "m", 1, b"")
    with pytest.raises(TypeError):
        esg.webhook_sign(old, "m", "1", b"")
    with pytest.raises(TypeError):
        esg.webhook_verify([1], "m", "1", sig, b"")
    # raw (non-whsec) secrets are used byte for byte
    assert esg.webhook_sign("plain", "m", 1, b"x") == esg.webhook_sign("plain", "m", 1, "x")


def test_webhook_helper_headers():
    w = esg.Webhook(["whsec_" + "QUJD" * 8], tolerance=60)
    h = w.sign("m1", 1000, b"x")
    assert set(h) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert w.verify(h, b"x", now=1000) == "m1"
    assert w.verify({k.upper(): v for k, v in h.items()}, b"x", now=1000) == "m1"
    with pytest.raises(esg.InvalidArgumentError):
        w.verify({"webhook-id": "m1"}, b"x", now=1000)
    with pytest.raises(TypeError):
        w.verify([], b"x")
    with pytest.raises(TypeError):
        esg.Webhook([])


@pytest.fixture
def server(examples_path, db):
    import webhook_handler

    secret = esg.webhook_secret()
    srv = webhook_handler.make_server(db, [esg.webhook_secret(), secret])
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, secret
    srv.shutdown()
    srv.server_close()
    srv.stores.close()


def post(srv, body, headers):
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    conn.request("POST", "/hooks", body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data)


def test_handler_end_to_end(server, db):
    srv, secret = server
    w = esg.Webhook(secret)
    body = json.dumps({"type": "invoice.paid", "id": "inv_1", "amount": 5}).encode()
    now = int(time.time())
    h = w.sign("msg_1", now, body)

    assert post(srv, body, h) == (200, {"status": "processed", "event": esg.uuid5("webhook/msg_1")})
    status, doc = post(srv, body, h)  # redelivery
    assert status == 200 and doc["status"] == "duplicate"

    forged = dict(h, **{"webhook-signature": esg.webhook_sign(esg.webhook_secret(), "msg_1", now, body)})
    assert post(srv, body, forged)[0] == 401
    assert post(srv, body.replace(b"5", b"6"), h)[0] == 401  # tampered body
    old = w.sign("msg_2", now - 3600, body)
    assert post(srv, body, old)[0] == 401  # replayed long after
    assert post(srv, body, {"webhook-id": "msg_3"})[0] == 400
    assert post(srv, b"[1]", w.sign("msg_4", now, b"[1]"))[0] == 400

    # a second genuine webhook, then check what the store holds
    body2 = json.dumps({"type": "invoice.paid", "id": "inv_1", "amount": 7}).encode()
    assert post(srv, body2, w.sign("msg_5", now, body2))[0] == 200
    with esg.Store(db) as s:
        evs = s.events("inv_1")
        assert [e["id"] for e in evs] == sorted([esg.uuid5("webhook/msg_1"), esg.uuid5("webhook/msg_5")])
        assert {e["raw"]["amount"] for e in evs} == {5, 7}
        assert s.get_event(esg.uuid5("webhook/msg_2")) is None  # nothing written for rejected requests


def test_handler_concurrent_redeliveries(server, db):
    srv, secret = server
    w = esg.Webhook(secret)
    body = b'{"type":"x","id":"thing"}'
    h = w.sign("msg_c", int(time.time()), body)
    out = []
    threads = [threading.Thread(target=lambda: out.append(post(srv, body, h))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(s for s, d in out if s == 200 and d["status"] == "processed")
    assert len(statuses) == 1  # handled exactly once
    assert all(s in (200, 409) for s, _ in out)
