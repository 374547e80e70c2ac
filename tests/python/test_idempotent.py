"""The @esg.idempotent decorator: repeats, failures and retries, mismatches, concurrency."""
import json
import threading

import pytest

import esg
from conftest import event


def test_repeat_returns_the_first_result(store):
    calls = []

    @esg.idempotent(store)
    def handle(ev, factor=1):
        calls.append(ev["id"])
        return {"price": ev["thing"]["price"] * factor}

    assert handle(event(1), factor=2) == {"price": 2}
    assert handle(event(1), factor=3) == {"price": 2}  # stored result, not run again
    assert handle(json.dumps(event(1))) == {"price": 2}  # same event as text
    assert handle(esg.parse_event(event(1))) == {"price": 2}
    assert calls == ["evt-1"]
    assert handle.__name__ == "handle" and handle.__wrapped__


def test_none_result_and_custom_key(store):
    n = []

    @esg.idempotent(store, key=lambda ev: "order:" + ev["thing"]["id"], ttl=10)
    def handle(ev):
        n.append(1)

    assert handle(event(1)) is None and handle(event(1)) is None
    assert len(n) == 1
    assert store.claim("order:thing-1", esg.payload_hash(event(1))).status == "duplicate"


def test_failure_releases_then_retry_runs(store):
    attempts = []

    @esg.idempotent(store)
    def flaky(ev):
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("downstream down")
        return "ok"

    with pytest.raises(ConnectionError):
        flaky(event(7))
    assert flaky(event(7)) == "ok"
    assert flaky(event(7)) == "ok"
    assert len(attempts) == 2


def test_unserialisable_result_releases(store):
    runs = []

    @esg.idempotent(store)
    def bad(ev):
        runs.append(1)
        return object() if len(runs) == 1 else [1, 2]

    with pytest.raises(TypeError):
        bad(event(1))
    assert bad(event(1)) == [1, 2]


def test_mismatch(store):
    @esg.idempotent(store)
    def handle(ev):
        return 1

    handle(event(1))
    with pytest.raises(esg.MismatchError):
        handle(event(1, thing={"changed": True}))
    # key order and spacing do not matter: canonical JSON
    reordered = dict(reversed(list(event(1).items())))
    assert handle(reordered) == 1


def test_concurrent_duplicate_busy_or_wait(db, clock):
    inside, release = threading.Event(), threading.Event()
    runs = []
    local = esg.ThreadLocalStore(db, clock=clock)

    @esg.idempotent(local)
    def slow(ev):
        runs.append(1)
        inside.set()
        release.wait(10)
        return "first"

    t = threading.Thread(target=slow, args=(event(1),))
    t.start()
    assert inside.wait(10)
    with pytest.raises(esg.BusyError) as ei:
        slow(event(1))
    assert ei.value.code == 3 and "in progress" in str(ei.value) and ei.value.lease_until > clock.now

    @esg.idempotent(local, wait=10.0)
    def slow_wait(ev):
        runs.append(2)
        return "second"

    threading.Timer(0.05, release.set).start()
    assert slow_wait(event(1)) == "first"  # waited for the holder, got its result
    t.join()
    assert runs == [1]
    local.close()
    local.close()
    with pytest.raises(esg.StateError):
        local.get()


def test_lease_expiry_lets_another_take_over(store, clock):
    @esg.idempotent(store, lease=5)
    def never(ev):
        return "x"

    c = store.claim("evt-1", esg.payload_hash(event(1)), 5, 3600)  # a crashed worker's claim
    with pytest.raises(esg.BusyError):
        never(event(1))
    clock.advance(6)
    assert never(event(1)) == "x"
    with pytest.raises(esg.TokenError):
        store.complete("evt-1", c.token, b"late")


def test_store_getter_forms(db):
    with pytest.raises(TypeError):
        esg.idempotent(42)
    with pytest.raises(TypeError):
        esg.idempotent(esg.Store(":memory:"), key="id")
    s = esg.Store(db)
    f = esg.idempotent(lambda: s)(lambda ev: ev["id"])
    assert f(event(3)) == "evt-3"
    s.close()
