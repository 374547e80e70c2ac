"""The store object, the event log, entities, batches and group commit."""
import gc
import json
import os

import pytest

import esg
from conftest import event


def test_open_options_and_properties(db, clock):
    with esg.Store(db, clock=clock, durability="full", busy_timeout=1.5, group_commit=0.0,
                   group_commit_max=10) as s:
        assert s.backend == "sqlite" and s.schema_version >= 1
        assert s.path == db and not s.closed
        assert s.now() == clock.now
    assert s.closed
    with esg.Store(":memory:") as m:
        assert abs(m.now() - __import__("time").time()) < 5
    s = esg.Store(os.fsencode(db))  # path-like and bytes paths work
    s.close()


def test_bad_options(db):
    with pytest.raises(esg.InvalidArgumentError):
        esg.Store(db, durability="sometimes")
    with pytest.raises(TypeError):
        esg.Store(db, clock=42)
    with pytest.raises(TypeError):
        esg.Store(db, busy_timeout="1")
    with pytest.raises(esg.InvalidArgumentError):
        esg.Store(db, group_commit=-1)
    with pytest.raises(TypeError):
        esg.Store(db, group_commit_max=1.5)
    with pytest.raises(TypeError):
        esg.Store(42)
    with pytest.raises(TypeError):
        esg.Store(db, "positional-option")


def test_open_failure_carries_the_c_text(tmp_path):
    with pytest.raises(esg.Error) as ei:
        esg.Store(str(tmp_path / "no" / "such" / "dir" / "x.db"))
    assert ei.value.errmsg and ei.value.code < 0


def test_close_twice_and_use_after_close(db):
    s = esg.Store(db)
    s.close()
    s.close()  # fine
    for call in (lambda: s.claim("k"), lambda: s.complete("k", 1), lambda: s.put_event(event(1)),
                 lambda: s.events("x"), lambda: s.upsert("k", 1, {}), lambda: s.get_entity("k"),
                 lambda: s.flush(), lambda: s.begin(), lambda: s.now(), lambda: s.purge_events(),
                 lambda: s.backend):
        with pytest.raises(esg.StateError) as ei:
            call()
        assert "closed" in str(ei.value) and ei.value.code == esg._esg.ESG_ESTATE
    with pytest.raises(esg.StateError):
        with s:
            pass


def test_dealloc_without_close_and_uninitialised():
    s = esg.Store(":memory:")
    s.claim("k")
    del s
    gc.collect()
    raw = esg.Store.__new__(esg.Store)  # never initialised: closed, never a crash
    with pytest.raises(esg.StateError):
        raw.claim("k")
    raw.close()


def test_clock_errors_raise_after_the_call(db):
    calls = []

    def bad_clock():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("clock broke")
        return 1000.0

    s = esg.Store(db, clock=bad_clock)
    s.now()
    with pytest.raises(RuntimeError, match="clock broke"):
        s.now()
    s.close()
    s = esg.Store(db, clock=lambda: "not a number")
    with pytest.raises(TypeError):
        s.claim("k")
    s.close()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 9.1e15, -1e300, 10**400])
def test_seconds_out_of_range_raise_naming_the_argument(store, bad):
    # seconds to ms is libesg's esg_ms_from_seconds: NaN, infinities and beyond 9e15 s are refused
    with pytest.raises(ValueError, match="lease is out of range"):
        store.claim("k", lease=bad)
    with pytest.raises(ValueError, match="ttl is out of range"):
        store.put_event({"id": "e", "type": "t", "timestamp": 1}, ttl=bad)
    with pytest.raises(ValueError, match="ttl is out of range"):
        esg.Cache(store, ttl=bad)
    with pytest.raises(ValueError, match="timeout is out of range"):
        esg.Egress(timeout=bad)
    assert store.claim("k").status == "new"  # nothing was written


def test_seconds_round_to_the_nearest_millisecond(store, clock):
    c = store.claim("r", lease=0.0015)  # 1.5 ms: halves away from zero
    assert round(c.lease_until - clock.now, 6) == 0.002
    with pytest.raises(esg.InvalidArgumentError):
        store.claim("n", lease=-0.001)  # negative converts; the C API refuses it as a lease
    with pytest.raises(ValueError, match="must not be negative"):
        esg.Cache(store, ttl=-1)
    assert store.record_fault("e", "s", "x", first_attempt=-1.5) > 0  # a time before the epoch
    assert store.faults()[-1].first_attempt == -1.5


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e300])
def test_a_clock_out_of_range_raises_after_the_call(db, value):
    s = esg.Store(db, clock=lambda: value)
    with pytest.raises(ValueError, match="clock returned a value out of range"):
        s.now()
    s.close()
    with esg.Store(db, clock=lambda: -86400.25) as s:
        assert s.now() == -86400.25  # before the epoch is a time


def test_event_log_put_query_get(store):
    evs = [event(i, partitionKey="p") for i in (3, 1, 2)]
    assert [store.put_event(e) for e in evs] == ["stored"] * 3
    assert store.put_event(evs[0]) == "duplicate"
    assert store.put_event(json.dumps(evs[0])) == "duplicate"
    got = store.events("p")
    assert [e["id"] for e in got] == ["evt-1", "evt-2", "evt-3"]  # (timestamp, id) order
    raw = store.events("p", raw=True)
    assert all(isinstance(b, bytes) for b in raw) and json.loads(raw[0])["id"] == "evt-1"
    assert store.get_event("evt-2")["thing"]["price"] == 2
    assert store.get_event("evt-2", raw=True).startswith(b"{")
    assert store.get_event("nope") is None
    assert store.events("nobody") == []


def test_event_log_corr_key_defaults_and_event_objects(store):
    e1 = esg.parse_event({"id": "a", "type": "t", "timestamp": 1})
    assert store.put_event(e1) == "stored"
    assert [e["id"] for e in store.events("a")] == ["a"]  # no partitionKey: its id
    assert store.put_event(event(5), corr_key="order-9") == "stored"
    assert [e["id"] for e in store.events("order-9")] == ["evt-5"]
    assert store.events("thing-5") == []


def test_event_ttl_and_purge_with_expired_events(store, clock):
    store.put_event(event(1), ttl=60)
    store.put_event(event(2), ttl=0)
    clock.advance(61)
    assert store.get_event("evt-1") is None and store.get_event("evt-2") is not None
    seen = []
    assert store.purge_events(seen.append) == 1
    (x,) = seen
    assert x["type"] == "thing-updated-expired" and x["expired"]["id"] == "evt-1"
    assert x["id"] == esg.uuid5("evt-1/expired") and x["partitionKey"] == "thing-1"
    assert store.purge_events() == 0


def test_purge_callback_false_or_raise_keeps_events(store, clock):
    for i in range(3):
        store.put_event(event(i), ttl=1)
    clock.advance(2)
    assert store.purge_events(lambda ev: False) == 0
    n = []

    def boom(ev):
        n.append(ev)
        raise KeyError("emit failed")

    with pytest.raises(KeyError):
        store.purge_events(boom)
    assert len(n) == 1  # the rest were kept without calling again
    with pytest.raises(esg.StateError):  # the callback must not use its store
        store.purge_events(lambda ev: store.put_event(ev))
    emitted = []
    assert store.purge_events(emitted.append) == 3
    for ev in emitted:  # emit them afterwards
        assert store.put_event(ev) == "stored"
    with pytest.raises(TypeError):
        store.purge_events(42)


def test_bad_envelopes_name_the_field_and_write_nothing(store):
    cases = [({"type": "t", "timestamp": 1}, '"id" is missing'),
             ({"id": 5, "type": "t", "timestamp": 1}, '"id" must be a string'),
             ({"id": "x", "timestamp": 1}, '"type" is missing'),
             ({"id": "x", "type": "t", "timestamp": 1.5}, '"timestamp" must be an integer'),
             ({"id": "x", "type": "t"}, '"timestamp" is missing'),
             ({"id": "x", "type": "t", "timestamp": 1, "tags": []}, '"tags" must be an object'),
             ({"id": "x", "type": "t", "timestamp": 1, "partitionKey": 7}, '"partitionKey" must be a string')]
    for bad, text in cases:
        with pytest.raises(esg.EventError) as ei:
            store.put_event(bad)
        assert text in str(ei.value) and ei.value.code == -5
    with pytest.raises(esg.JSONError):
        store.put_event(b"{not json")
    with pytest.raises(esg.EventError):
        store.put_event(b"[1,2]")
    with pytest.raises(TypeError):
        store.put_event(42)
    with pytest.raises(TypeError):
        store.put_event(event(1), corr_key=5)
    with pytest.raises(esg.InvalidArgumentError):
        store.put_event(event(1), ttl=-1)
    assert store.get_event("x") is None and store.get_event("evt-1") is None


def test_entities_inverse_oplock(store):
    assert store.get_entity("t1") is None
    assert store.upsert("t1", 2, {"name": "b"}) == "applied"
    assert store.upsert("t1", 1, {"name": "a"}) == "stale"
    assert store.upsert("t1", 2, '{"name":"same version"}') == "stale"
    e = store.get_entity("t1")
    assert isinstance(e, esg.Entity) and e.version == 2 and not e.deleted and e.doc == {"name": "b"}
    assert store.get_entity("t1", raw=True).doc == b'{"name":"b"}'
    assert store.delete_entity("t1", 1) == "stale"
    assert store.delete_entity("t1", 3) == "applied"
    e = store.get_entity("t1")
    assert e.deleted and e.doc is None and e.version == 3
    assert store.upsert("t1", 3, {"name": "late"}) == "stale"  # the tombstone holds
    assert store.upsert("t1", 4, b'{"name":"back"}') == "applied"
    assert store.get_entity("t1").doc == {"name": "back"}


def test_entity_bad_input(store):
    with pytest.raises(esg.JSONError):
        store.upsert("k", 1, "[1,2]")
    with pytest.raises(esg.JSONError):
        store.upsert("k", 1, b"{bad")
    with pytest.raises(TypeError):
        store.upsert("k", "1", {})
    with pytest.raises(TypeError):
        store.upsert("k", 1, {"x": object()})
    with pytest.raises(esg.JSONError):
        store.upsert("k", 1, {"x": float("nan")})
    assert store.get_entity("k") is None


def test_batch_commits_or_rolls_back(db, clock):
    with esg.Store(db, clock=clock) as s, esg.Store(db, clock=clock) as other:
        with s.batch():
            s.put_event(event(1))
            c = s.claim("k")
            s.complete("k", c.token, b"r")
        assert other.get_event("evt-1") is not None
        with pytest.raises(RuntimeError):
            with s.batch():
                s.put_event(event(2))
                s.upsert("e", 1, {})
                raise RuntimeError("handler failed")
        assert s.get_event("evt-2") is None and s.get_entity("e") is None
        with pytest.raises(esg.StateError):
            with s.batch():
                with s.batch():
                    pass
        with pytest.raises(esg.StateError):
            s.commit()
        s.begin()
        s.put_event(event(3))
        s.rollback()
        assert s.get_event("evt-3") is None


def test_flush_due_and_uri(db, clock):
    s = esg.Store("sqlite:" + db, clock=clock, group_commit=10.0)
    assert s.backend == "sqlite"
    assert s.flush_due() is None  # no group open
    start = s.now()
    s.put_event(event(1))
    assert s.flush_due() == pytest.approx(start + 10.0, abs=0.002)
    other = esg.Store(db, clock=clock, busy_timeout=0.05)
    assert other.get_event("evt-1") is None  # not committed yet
    clock.advance(11)
    assert s.get_event("evt-1") is not None  # a read once the group is due commits it
    assert other.get_event("evt-1") is not None
    assert s.flush_due() is None
    s.close()
    other.close()
    with pytest.raises(esg.InvalidArgumentError, match='unknown store scheme "nosuch".*sqlite'):
        esg.Store("nosuch://x")


def test_group_commit_and_flush(db, clock):
    s = esg.Store(db, clock=clock, group_commit=10.0, group_commit_max=3)
    other = esg.Store(db, clock=clock, busy_timeout=0.05)
    s.put_event(event(1))
    assert other.get_event("evt-1") is None  # not committed yet
    s.flush()
    assert other.get_event("evt-1") is not None
    s.put_event(event(2))
    s.put_event(event(3))
    s.put_event(event(4))  # the third write of the group commits it
    assert other.get_event("evt-4") is not None
    s.put_event(event(5))
    clock.advance(11)  # the group is due: the next write commits
    s.put_event(event(6))
    assert other.get_event("evt-6") is not None
    s.put_event(event(7))
    s.close()  # close commits the open group
    assert other.get_event("evt-7") is not None
    other.close()


def test_store_subclass_and_repr(db):
    class MyStore(esg.Store):
        pass

    with MyStore(db) as s:
        assert s.claim("k").status == "new"
    assert "Claim" in repr(esg.Claim) and esg.Store.__doc__


def test_hostile_schema_versions(tmp_path):
    # A negative or unknown schema version is a clear error naming the file and the
    # version (it once indexed the migration table out of bounds: SIGSEGV).
    import sqlite3
    for version in (-3, -2147483648, 999):
        path = str(tmp_path / f"v{version}.db")
        con = sqlite3.connect(path)
        con.execute(f"PRAGMA user_version={version}")
        con.close()
        with pytest.raises(esg.Error) as e:
            esg.Store(path)
        assert str(version) in str(e.value) and path in str(e.value)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database " * 10)
    with pytest.raises(esg.Error) as e:
        esg.Store(str(junk))
    assert "not a database" in str(e.value)
