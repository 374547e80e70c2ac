"""esg.Cache: every outcome of get and get_or_load with a fake clock, single flight across threads."""
import threading
import time

import pytest

import esg
from conftest import FakeClock, event


@pytest.fixture
def cache(store):
    with esg.Cache(store, ttl=60, negative_ttl=10, max_stale=100) as c:
        yield c


def test_put_get_hit_stale_miss(cache, clock):
    assert cache.get("thing-1").result == "miss"
    cache.put("thing-1", {"name": "a"})
    e = cache.get("thing-1")
    assert isinstance(e, esg.CacheEntry)
    assert e.result == "hit" and e.value == {"name": "a"} and e.expires == pytest.approx(clock.now + 60)
    assert cache.get("thing-1", raw=True).value == b'{"name":"a"}'
    clock.advance(61)
    e = cache.get("thing-1")
    assert e.result == "stale" and e.value == {"name": "a"}
    clock.advance(100)
    assert cache.get("thing-1").result == "miss"


def test_put_text_and_ttl(cache, clock):
    cache.put("k", b'[1,2]', ttl=5)
    assert cache.get("k").value == [1, 2]
    clock.advance(6)
    assert cache.get("k").result == "stale"
    with pytest.raises(esg.JSONError):
        cache.put("k", b"not json")


def test_negative_and_invalidate(cache, clock):
    cache.put_negative("gone")
    e = cache.get("gone")
    assert e.result == "negative" and e.value is None
    clock.advance(11)
    assert cache.get("gone").result == "miss"
    cache.put("x", 1)
    cache.invalidate("x")
    assert cache.get("x").result == "miss"


def test_get_or_load_hit_then_cached(cache):
    calls = []

    def loader(key):
        calls.append(key)
        return {"id": key, "n": len(calls)}

    e = cache.get_or_load("thing-9", loader)
    assert e.result == "hit" and e.loaded and e.value == {"id": "thing-9", "n": 1} and e.error is None
    e = cache.get_or_load("thing-9", loader)
    assert e.result == "hit" and not e.loaded and calls == ["thing-9"]


def test_get_or_load_bytes_and_ttl(cache, clock):
    e = cache.get_or_load("k", lambda k: b'{"a":1}', ttl=5)
    assert e.value == {"a": 1} and e.expires == pytest.approx(clock.now + 5)


@pytest.mark.parametrize("absent", [esg.ABSENT, None])
def test_get_or_load_negative(cache, clock, absent):
    calls = []

    def loader(key):
        calls.append(key)
        return absent

    e = cache.get_or_load("nobody", loader)
    assert e.result == "negative" and e.loaded and e.value is None
    assert cache.get_or_load("nobody", loader).result == "negative"
    assert len(calls) == 1
    clock.advance(11)
    cache.get_or_load("nobody", loader)
    assert len(calls) == 2
    assert repr(esg.ABSENT) == "esg.ABSENT"


def test_loader_exception_serves_stale(cache, clock):
    cache.put("k", {"v": 1})
    clock.advance(61)

    def broken(key):
        raise ConnectionError("crm is down")

    e = cache.get_or_load("k", broken)
    assert e.result == "stale" and e.value == {"v": 1}
    assert e.load_status == esg._esg.ESG_ECALLBACK
    assert "ConnectionError: crm is down" in e.error


def test_loader_exception_without_stale_raises(cache):
    def broken(key):
        raise ConnectionError("crm is down")

    with pytest.raises(esg.CallbackError) as ei:
        cache.get_or_load("k", broken)
    assert "ConnectionError: crm is down" in str(ei.value)
    assert isinstance(ei.value.__cause__, ConnectionError)
    assert cache.stats().load_failures == 1


def test_no_stale_when_max_stale_zero(store, clock):
    with esg.Cache(store, ttl=60, max_stale=0) as c:
        c.put("k", 1)
        clock.advance(61)
        assert c.get("k").result == "miss"
        with pytest.raises(esg.CallbackError):
            c.get_or_load("k", lambda k: 1 / 0)


def test_loader_past_deadline_times_out(store, clock):
    with esg.Cache(store, load_timeout=2) as c:
        seen = []

        def slow(key, deadline):
            seen.append(deadline)
            clock.advance(3)
            return 1

        with pytest.raises(esg.TimeoutError):
            c.get_or_load("k", slow, deadline=True)
        assert seen == [pytest.approx(clock.now - 3 + 2)]
        assert c.get("k").result == "miss"  # the late result was discarded


def test_deadline_none_without_limit(store):
    with esg.Cache(store, load_timeout=None) as c:
        assert c.get_or_load("k", lambda k, d: d, deadline=True).result == "negative"  # None: absent


def test_loader_bad_values(store):
    with esg.Cache(store, max_value_bytes=10) as c:
        with pytest.raises(esg.JSONError):
            c.get_or_load("a", lambda k: b"{nope")
        with pytest.raises(esg.TooBigError):
            c.get_or_load("b", lambda k: "x" * 100)
        with pytest.raises(esg.CallbackError) as ei:
            c.get_or_load("c", lambda k: object())
        assert "TypeError" in str(ei.value)


def test_base_exception_propagates(cache):
    def interrupted(key):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_load("k", interrupted)
    assert cache.get_or_load("k", lambda k: 2).value == 2


def test_loader_cannot_use_the_store(cache, store):
    with pytest.raises(esg.CallbackError) as ei:
        cache.get_or_load("k", lambda k: store.now())
    assert isinstance(ei.value.__cause__, esg.StateError)


def test_bytes_cache(store):
    with esg.Cache(store, json=False) as c:
        c.put("k", b"\x00\xffraw")
        assert c.get("k").value == b"\x00\xffraw"
        assert c.get_or_load("j", lambda k: b"\x01").value == b"\x01"


def test_collect(store, clock):
    with esg.Cache(store) as c:
        assert c.collect(event(5)) == ("applied", "thing/thing-5")
        assert c.get("thing/thing-5").value == {"id": "thing-5", "price": 5}
        assert c.collect(event(5)) == ("stale", "thing/thing-5")  # same version
        assert c.collect(esg.parse_event(event(15, thing={"id": "thing-5", "price": 15}))) == ("applied", "thing/thing-5")
        assert c.collect({"id": "x", "type": "t", "timestamp": 1}) == ("no_match", None)
        with pytest.raises(esg.EventError):
            c.collect({"id": "x"})


def test_stats_and_purge(store, clock):
    with esg.Cache(store, ttl=1, max_stale=1) as c:
        c.put("a", 1)
        c.get("a")
        c.get("b")
        s = c.stats()
        assert isinstance(s, esg.CacheStats)
        assert s.hits == 1 and s.misses == 1 and s.mem_entries == 1
        clock.advance(5)
        assert c.purge() == 1


def test_options_and_closing(store):
    with pytest.raises(TypeError):
        esg.Cache("not a store")
    with pytest.raises(ValueError):
        esg.Cache(store, ttl=-1)
    c = esg.Cache(store, mem_entries=0)
    c.put("a", 1)
    assert c.get("a").value == 1 and c.stats().mem_hits == 0
    c.close()
    c.close()
    assert c.closed
    with pytest.raises(esg.StateError):
        c.get("a")
    c2 = esg.Cache(store)
    store.close()  # closes the caches on it
    assert c2.closed
    with pytest.raises(esg.StateError):
        c2.get("a")
    c2.close()  # frees the detached handle
    c2.close()
    assert c2.closed


def test_clock_exception_propagates(db):
    def bad():
        raise RuntimeError("clock broke")

    s = esg.Store(db)
    c = esg.Cache(s)
    c.put("a", 1)
    s.close()
    s = esg.Store(db, clock=bad)
    with pytest.raises(RuntimeError):
        esg.Cache(s).get("zzz")
    s.close()


def test_single_flight_across_threads(db):
    esg.Store(db).close()
    calls = []
    release = threading.Event()
    results, errors = [], []

    def loader(key):
        calls.append(key)
        release.wait(5)
        return {"loaded": key}

    def worker():
        try:
            with esg.Store(db) as s, esg.Cache(s) as c:
                results.append(c.get_or_load("shared", loader).value)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the others are waiting for the one load (with the GIL released)
    release.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert calls == ["shared"]
    assert results == [{"loaded": "shared"}] * 6
