"""Claims through the Python binding: every outcome, tokens, leases and TTLs on a fake clock."""
import pytest

import esg


def test_new_then_busy_then_duplicate(store):
    c = store.claim("k1", b"hash-1", lease=30.0, ttl=3600.0)
    assert isinstance(c, esg.Claim)
    assert c.status == "new" and isinstance(c.token, int) and c.token != 0
    assert c.attempts == 1 and c.result is None and c.key == "k1"
    assert c.lease_until == pytest.approx(store.now() + 30.0)
    assert c.expires == pytest.approx(store.now() + 3600.0)

    b = store.claim("k1", b"hash-1")
    assert b.status == "busy" and b.token is None and b.lease_until == pytest.approx(c.lease_until)

    assert store.complete("k1", c.token, b"the result") is None
    d = store.claim("k1", b"hash-1")
    assert d.status == "duplicate" and d.token is None and d.result == b"the result"


def test_results_bytes_str_json_and_none(store):
    for key, result, stored in [("a", b"\x00\x01", b"\x00\x01"), ("b", "text", b"text"),
                                ("c", {"x": [1, 2]}, b'{"x":[1,2]}'), ("d", None, None), ("e", 42, b"42")]:
        c = store.claim(key)
        store.complete(key, c.token, result)
        assert store.claim(key).result == stored


def test_mismatch_is_an_error_with_the_c_text(store):
    c = store.claim("k", b"one")
    with pytest.raises(esg.MismatchError) as ei:
        store.claim("k", b"two")
    e = ei.value
    assert e.code == esg._esg.ESG_EMISMATCH == -3 and e.name == "EMISMATCH"
    assert 'claim key "k" was first used with a different payload' in str(e)
    assert e.errmsg == str(e)
    store.complete("k", c.token, b"r")
    with pytest.raises(esg.MismatchError):
        store.claim("k", b"two")
    assert store.claim("k").status == "duplicate"  # no payload: no check


def test_payload_forms(store):
    ev = esg.parse_event({"id": "e", "type": "t", "timestamp": 1})
    c = store.claim("ev", ev)
    store.complete("ev", c.token)
    assert store.claim("ev", esg.parse_event(ev.json)).status == "duplicate"
    # a dict payload hashes its canonical JSON: key order does not matter
    c = store.claim("doc", {"a": 1, "b": 2})
    store.complete("doc", c.token)
    assert store.claim("doc", {"b": 2, "a": 1}).status == "duplicate"
    with pytest.raises(esg.MismatchError):
        store.claim("doc", {"a": 1, "b": 3})
    # long payloads are hashed, short ones kept as they are; str is its UTF-8
    big = b"x" * 1000
    c = store.claim("big", big)
    store.complete("big", c.token)
    assert store.claim("big", big).status == "duplicate"
    with pytest.raises(esg.MismatchError):
        store.claim("big", b"y" * 1000)
    c = store.claim("s", "héllo")
    store.complete("s", c.token)
    assert store.claim("s", "héllo".encode()).status == "duplicate"


def test_lease_expiry_takeover_and_stale_token(store, clock):
    a = store.claim("k", b"h", lease=10.0)
    clock.advance(9.9)
    assert store.claim("k", b"h").status == "busy"
    clock.advance(0.2)
    b = store.claim("k", b"h", lease=10.0)
    assert b.status == "new" and b.attempts == 2 and b.token != a.token
    with pytest.raises(esg.TokenError) as ei:
        store.complete("k", a.token, b"late")
    assert "no longer owns" in ei.value.errmsg and ei.value.code == -4
    with pytest.raises(esg.TokenError):
        store.release("k", a.token)
    with pytest.raises(esg.TokenError):
        store.extend("k", a.token, 10.0)
    store.complete("k", b.token, b"winner")
    assert store.claim("k", b"h").result == b"winner"


def test_release_lets_a_retry_run(store):
    a = store.claim("k")
    store.release("k", a.token)
    b = store.claim("k")
    assert b.status == "new" and b.attempts == 1
    with pytest.raises(esg.TokenError):
        store.release("k", a.token)


def test_extend(store, clock):
    a = store.claim("k", lease=5.0)
    clock.advance(4.0)
    store.extend("k", a.token, 5.0)
    clock.advance(4.0)
    assert store.claim("k").status == "busy"
    clock.advance(2.0)
    assert store.claim("k").status == "new"


def test_ttl_expiry_counts_as_absent_and_purge(store, clock):
    c = store.claim("k", ttl=100.0)
    store.complete("k", c.token, b"r")
    clock.advance(99.0)
    assert store.claim("k").status == "duplicate"
    clock.advance(101.0)
    assert store.purge_claims() == 1
    assert store.claim("k").status == "new"
    assert store.purge_claims() == 0


def test_claim_wait_returns_at_once_when_not_busy(store):
    assert store.claim_wait("k", None, 30.0, 3600.0, 0.05).status == "new"
    # busy with a lease that never runs out on the stopped fake clock: waits
    # (real time, GIL released) then answers busy
    assert store.claim_wait("k", wait=0.05).status == "busy"


def test_claim_wait_sees_another_store_complete(db, clock):
    import threading

    with esg.Store(db, clock=clock) as a, esg.Store(db, clock=clock) as b:
        c = a.claim("k")
        t = threading.Timer(0.05, lambda: a.complete("k", c.token, b"done"))
        t.start()
        r = b.claim_wait("k", wait=10.0)
        t.join()
        assert r.status == "duplicate" and r.result == b"done"


def test_bad_arguments(store):
    with pytest.raises(TypeError):
        store.claim(123)
    with pytest.raises(TypeError):
        store.claim(b"bytes-key")
    with pytest.raises(TypeError):
        store.claim("k", lease="long")
    with pytest.raises(TypeError):
        store.complete("k", "not-a-token")
    with pytest.raises(TypeError):
        store.claim("k", payload=object())
    with pytest.raises(TypeError):
        store.claim()
    with pytest.raises(TypeError):
        store.claim("k", nope=1)
    with pytest.raises(TypeError):
        store.claim("k", None, 1.0, 2.0, 3.0)
    with pytest.raises(ValueError):
        store.claim("a\0b")
    with pytest.raises(esg.InvalidArgumentError) as ei:
        store.claim("")
    assert isinstance(ei.value, ValueError) and "empty" in str(ei.value)
    with pytest.raises(esg.InvalidArgumentError) as ei:
        store.claim("k", lease=-1)
    assert "lease" in str(ei.value)
    with pytest.raises(esg.TooBigError):
        store.claim("k" * 2000)
    # nothing was claimed by the failed calls
    assert store.claim("k").status == "new"


def test_duration_errors_are_in_seconds(store):
    # the caller's unit: seconds, as given (libesg itself would say milliseconds)
    with pytest.raises(esg.InvalidArgumentError, match=r"lease must be at least 0.001 s \(got -1 s\)"):
        store.claim("k", b"x", lease=-1)
    with pytest.raises(esg.InvalidArgumentError, match=r"ttl must be at least 0.001 s \(got 0 s\)"):
        store.claim("k", b"x", ttl=0)
    with pytest.raises(esg.InvalidArgumentError, match=r"got 0.0001 s"):
        store.claim("k", b"x", lease=0.0001)
    with pytest.raises(esg.InvalidArgumentError, match=r"ttl must be at least 0.001 s \(got -5 s\)"):
        store.latch("k", "crm", {"a": 1}, ttl=-5)
