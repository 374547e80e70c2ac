"""Resync: cursor jobs with a Python fetch, snapshot diff, replay."""
import pytest

import esg
from conftest import event

SOURCE = [{"id": f"c{i}", "version": f"v{i}", "type": "customer-updated", "timestamp": 1_700_000_000_000 + i,
           "data": {"id": f"c{i}", "n": i}} for i in range(7)]


def paged(pages_seen, size=3):
    def fetch(cursor):
        pages_seen.append(cursor)
        start = 0 if cursor is None else int(cursor)
        items = SOURCE[start:start + size]
        nxt = start + len(items)
        return items, str(nxt), nxt >= len(SOURCE)
    return fetch


def test_cursor_job_runs_to_the_end(store):
    seen, sunk = [], []
    st = store.cursor_run("customers", "crm", paged(seen), sink=sunk.append)
    assert isinstance(st, esg.ResyncStats)
    assert (st.pages, st.emitted, st.duplicates, st.done) == (3, 7, 0, True)
    assert seen == [None, "3", "6"]
    assert store.cursor_get("customers") == "7"
    assert [e["entity"]["id"] for e in sunk] == [f"c{i}" for i in range(7)]
    assert sunk[0]["tags"] == {"source": "crm", "itemId": "c0", "itemVersion": "v0"}
    assert store.get_event(sunk[0]["id"])["type"] == "customer-updated"
    # rewound: the same items give the same ids, stored once
    store.cursor_set("customers", "0")
    st = store.cursor_run("customers", "crm", paged([]))
    assert (st.emitted, st.duplicates) == (0, 7)
    assert store.cursor_delete("customers") is True
    assert store.cursor_get("customers") is None
    assert store.cursor_delete("customers") is False


def test_cursor_job_max_pages_and_resume(store):
    seen = []
    st = store.cursor_run("j", "crm", paged(seen), max_pages=1)
    assert (st.pages, st.done) == (1, False) and store.cursor_get("j") == "3"
    st = store.cursor_run("j", "crm", paged(seen))
    assert st.pages == 2 and seen == [None, "3", "6"]


def test_fetch_exception_keeps_the_cursor(store):
    calls = []

    def flaky(cursor):
        calls.append(cursor)
        if cursor == "3":
            raise ConnectionError("legacy db is down")
        return paged([])(cursor)

    with pytest.raises(ConnectionError):
        store.cursor_run("j", "crm", flaky)
    assert store.cursor_get("j") == "3"  # the first page committed; the failing one did not


def test_sink_exception_rolls_back_the_page(store):
    def sink(ev):
        raise ValueError("downstream refused")

    with pytest.raises(ValueError):
        store.cursor_run("j", "crm", paged([]), sink=sink)
    assert store.cursor_get("j") is None
    assert store.replay() == []


def test_bad_page_shapes(store):
    with pytest.raises(TypeError):
        store.cursor_run("j", "crm", lambda c: [])
    with pytest.raises(KeyError):
        store.cursor_run("j", "crm", lambda c: ([{"id": "1"}], "1", True))
    with pytest.raises(esg.StateError):
        store.cursor_run("j", "crm", lambda c: store.now())
    with pytest.raises(esg.InvalidArgumentError):
        store.cursor_run("j", "crm", paged([]), no_log=True)  # no sink: the events would go nowhere


def test_snapshot_diff(store):
    first = {f"k{i}": {"v": i} for i in range(5)}
    with store.snapshot("erp", type="product") as sn:
        for k, v in first.items():
            sn.add(k, v)
        st = sn.finish()
    assert (st.created, st.updated, st.deleted, st.unchanged) == (5, 0, 0, 0)
    second = dict(first)
    second["k1"] = {"v": 100}
    del second["k2"]
    second["k9"] = {"v": 9}
    emitted = []
    with store.snapshot("erp", type="product", sink=emitted.append) as sn:
        for k, v in second.items():
            sn.add(k, v)
        st = sn.finish()
    assert (st.created, st.updated, st.deleted, st.unchanged) == (1, 1, 1, 3)
    assert sorted(e["type"] for e in emitted) == ["product-created", "product-deleted", "product-updated"]
    assert sn.closed
    with pytest.raises(esg.StateError):
        sn.add("x", {})


def test_snapshot_bad_entry_and_resume(store):
    sn = store.snapshot("s")
    with pytest.raises(esg.JSONError):
        sn.add("k", b"{nope")
    sn.add("a", {"v": 1})
    sn.close()  # unfinished: resumed by the next listing
    sn2 = store.snapshot("s")
    sn2.add("a", {"v": 1})
    st = sn2.finish()
    assert st.created == 0 and st.unchanged == 1
    sn3 = store.snapshot("s")
    sn3.add("b", {"v": 2})  # its batch is open
    store.close()  # closes the listing too: the open batch is rolled back
    assert sn3.closed
    with pytest.raises(esg.StateError):
        sn3.add("c", {"v": 3})
    sn3.close()


def test_replay_filters(store):
    for i in range(6):
        store.put_event(event(i, partitionKey="a" if i % 2 else "b", type="t1" if i < 3 else "t2"))
    ids = lambda evs: [e["id"] for e in evs]
    assert ids(store.replay()) == [f"evt-{i}" for i in range(6)]
    assert ids(store.replay(corr_key="a")) == ["evt-1", "evt-3", "evt-5"]
    assert ids(store.replay(type="t2")) == ["evt-3", "evt-4", "evt-5"]
    assert ids(store.replay(since=1_700_000_000_002, until=1_700_000_000_004)) == ["evt-2", "evt-3"]
    assert all(isinstance(e, bytes) for e in store.replay(raw=True))
