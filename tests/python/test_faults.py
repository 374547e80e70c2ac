"""Fault records and correlation rules through Store."""
import pytest

import esg
from conftest import event


def test_record_list_get_delete(store, clock):
    ev = event(1)
    a = store.record_fault("evt-1", "deliver", "HTTP 500", event=ev, http_status=500, attempts=3,
                           first_attempt=clock.now - 10)
    clock.advance(1)
    b = store.record_fault("evt-2", "transform", "KeyError: 'x'")
    assert b > a
    faults = store.faults()
    assert [f.id for f in faults] == [a, b]
    f = store.get_fault(a)
    assert isinstance(f, esg.Fault)
    assert (f.event_id, f.stage, f.error, f.http_status, f.attempts) == ("evt-1", "deliver", "HTTP 500", 500, 3)
    assert f.first_attempt == pytest.approx(clock.now - 11)
    assert f.last_attempt == pytest.approx(clock.now - 1)
    assert esg.parse_event(f.event).id == "evt-1"
    g = store.get_fault(b)
    assert g.event is None and g.http_status == 0 and g.last_attempt == pytest.approx(clock.now)
    assert store.delete_fault(a) is True
    assert store.delete_fault(a) is False
    assert store.get_fault(a) is None
    assert [f.id for f in store.faults()] == [b]


def test_record_fault_takes_event_object_and_text(store):
    ev = esg.parse_event(event(3))
    i = store.record_fault("evt-3", "deliver", "x", event=ev)
    j = store.record_fault("evt-3", "deliver", "x", event=ev.json.decode())
    assert store.get_fault(i).event == ev.json == store.get_fault(j).event


def test_record_fault_missing_field(store):
    with pytest.raises(esg.InvalidArgumentError) as ei:
        store.record_fault("", "deliver", "x")
    assert "event" in str(ei.value)
    assert store.faults() == []
    with pytest.raises(TypeError):
        store.record_fault("evt-1", "deliver")


def test_purge_faults(store, clock):
    old = store.record_fault("evt-1", "deliver", "x")
    clock.advance(100)
    new = store.record_fault("evt-2", "deliver", "x")
    assert store.purge_faults(before=clock.now - 50) == 1
    assert [f.id for f in store.faults()] == [new]
    assert store.purge_faults() == 1
    assert store.faults() == []
    assert old < new


def test_correlate_fires_once(store):
    for i in range(3):
        store.put_event(event(i * 10, partitionKey="order-1"))
    seen = []

    def two_or_more(events):
        seen.append([e["id"] for e in events])
        return len(events) >= 2

    status, ev = store.correlate("order-1", "busy-order", two_or_more)
    assert status == "fired"
    assert ev["id"] == "order-1.busy-order" and ev["type"] == "busy-order"
    assert ev["triggers"] == ["evt-0", "evt-10", "evt-20"]
    assert seen == [["evt-0", "evt-10", "evt-20"]]
    assert store.get_event("order-1.busy-order")["triggers"] == ev["triggers"]
    assert store.correlate("order-1", "busy-order", two_or_more) == ("duplicate", None)


def test_correlate_no_match_and_raw(store):
    store.put_event(event(1, partitionKey="k"))
    got = []
    assert store.correlate("k", "r", lambda evs: got.extend(evs) or False, raw=True) == ("no_match", None)
    assert isinstance(got[0], bytes)


def test_correlate_predicate_exception_propagates(store):
    store.put_event(event(1, partitionKey="k"))

    class Boom(Exception):
        pass

    def bad(events):
        raise Boom("no")

    with pytest.raises(Boom):
        store.correlate("k", "r", bad)
    # nothing fired, the store still works
    assert store.correlate("k", "r", lambda evs: True)[0] == "fired"


def test_correlate_predicate_cannot_use_store(store):
    store.put_event(event(1, partitionKey="k"))
    with pytest.raises(esg.StateError):
        store.correlate("k", "r", lambda evs: store.now())


def test_correlate_bad_args(store):
    with pytest.raises(TypeError):
        store.correlate("k", "r", 42)


def test_record_fault_refuses_counts_beyond_an_int(store):
    # 2**32 + 503 used to be narrowed to 503 (and attempts likewise) without a word.
    with pytest.raises(ValueError, match="http_status"):
        store.record_fault("evt-1", "deliver", "x", http_status=2**32 + 503)
    with pytest.raises(ValueError, match="http_status"):
        store.record_fault("evt-1", "deliver", "x", http_status=-1)
    with pytest.raises(ValueError, match="attempts"):
        store.record_fault("evt-1", "deliver", "x", attempts=2**32 + 1)
    with pytest.raises(OverflowError, match="attempts"):
        store.record_fault("evt-1", "deliver", "x", attempts=2**64)
    assert store.faults() == []  # nothing was written
    f = store.get_fault(store.record_fault("evt-1", "deliver", "x", http_status=599, attempts=2**31 - 1))
    assert (f.http_status, f.attempts) == (599, 2**31 - 1)
