"""Latches: flag latches (latch_flagged, latch_mark) and content latches on the store."""
import pytest

import esg
from conftest import event


def test_flagged_and_mark():
    ev = event(1)
    assert esg.latch_flagged(ev) is False
    marked = esg.latch_mark(ev)
    assert isinstance(marked, dict) and marked["latched"] is True
    assert esg.latch_flagged(marked) is True
    assert esg.latch_flagged(esg.parse_event(marked)) is True
    nested = dict(ev, thing=dict(ev["thing"], latched=True))
    assert esg.latch_flagged(nested) is True
    cleared = esg.latch_mark(nested, latched=False)
    assert esg.latch_flagged(cleared) is False and "latched" not in cleared["thing"]
    text = esg.latch_mark(b'{"a":1}')
    assert text == b'{"a":1,"latched":true}'
    assert esg.latch_mark(esg.parse_event(ev)).endswith(b'"latched":true}')
    assert esg.latch_flagged('{"latched":"true"}') is False  # only the JSON boolean counts
    with pytest.raises(esg.JSONError):
        esg.latch_flagged(b"[1]")
    with pytest.raises(esg.JSONError):
        esg.latch_mark(b"nope")


def test_echo_is_suppressed_once(store):
    doc = {"name": "Ada", "email": "ada@example.com"}
    h = store.latch("contact-1", "crm", doc)
    assert h == esg.content_hash(doc)
    assert store.latch_pending("contact-1", "crm") == 1
    # the CRM reports the same state back, keys in another order: an echo
    assert store.latch_check("contact-1", "crm", {"email": "ada@example.com", "name": "Ada"}) == "echo"
    assert store.latch_pending("contact-1", "crm") == 0
    # the same state again is now a genuine change
    assert store.latch_check("contact-1", "crm", doc) == "genuine"


def test_genuine_change_passes(store):
    store.latch("k", "crm", {"v": 1})
    assert store.latch_check("k", "crm", {"v": 2}) == "genuine"
    assert store.latch_check("k", "erp", {"v": 1}) == "genuine"  # other side


def test_hash_text_and_cancel(store):
    store.latch("k", "crm", hash="etag-7")
    assert store.latch_cancel("k", "crm", hash="etag-7") is True
    assert store.latch_cancel("k", "crm", hash="etag-7") is False
    assert store.latch_check("k", "crm", hash="etag-7") == "genuine"
    with pytest.raises(TypeError):
        store.latch("k", "crm")
    with pytest.raises(TypeError):
        store.latch("k", "crm", {"a": 1}, hash="x")


def test_latches_expire(store, clock):
    store.latch("k", "crm", {"v": 1}, ttl=10)
    clock.advance(11)
    assert store.latch_pending("k", "crm") == 0
    assert store.purge_latches() == 1
    assert store.latch_check("k", "crm", {"v": 1}) == "genuine"


def test_two_way_sync_does_not_loop(store):
    """A change made in A crosses to B once; B's echo stops; no ping-pong."""
    a = {"x": {"v": 0}}
    b = {"x": {"v": 0}}
    crossings = []

    def on_change(side, key, doc):
        other = "b" if side == "a" else "a"
        if store.latch_check(key, side, doc) == "echo":
            return
        crossings.append((side, doc["v"]))
        store.latch(key, other, doc)
        target = b if other == "b" else a
        target[key] = dict(doc)
        on_change(other, key, target[key])  # the other side reports its write back

    a["x"] = {"v": 1}
    on_change("a", "x", a["x"])
    assert crossings == [("a", 1)] and b["x"] == {"v": 1}
