"""Threads and processes sharing one store file: each key completed exactly once, no crash."""
import multiprocessing
import os
import threading

import esg

KEYS = 200


def _worker(path, keys, results, name):
    """Claims every key; completes the ones it wins. One Store per thread/process."""
    done = []
    with esg.Store(path, busy_timeout=30.0) as s:
        for k in keys:
            c = s.claim_wait(k, b"payload-" + k.encode(), lease=60.0, ttl=3600.0, wait=30.0)
            if c.status == "new":
                s.complete(k, c.token, name.encode())
                done.append(k)
            else:
                assert c.status == "duplicate", c
    results.extend(done) if isinstance(results, list) else results.put(done)


def test_eight_threads_one_store_each(db):
    esg.Store(db).close()  # create the schema once
    keys = [f"key-{i}" for i in range(KEYS)]
    results, errors = [], []

    def run(n):
        try:
            # every thread walks the keys in a different order to force collisions
            _worker(db, keys[n:] + keys[:n] if n % 2 else list(reversed(keys)), results, f"t{n}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(results) == sorted(keys)  # each completed once, by exactly one thread
    with esg.Store(db) as s:
        for k in keys:
            c = s.claim(k, b"payload-" + k.encode())
            assert c.status == "duplicate" and c.result.startswith(b"t")


def test_shared_store_object_is_serialised_not_crashed(db):
    # Not the documented pattern, but must stay safe: one Store used by 4 threads.
    s = esg.Store(db)
    won = []

    def run(n):
        for i in range(100):
            c = s.claim(f"k{i}")
            if c.status == "new":
                s.complete(f"k{i}", c.token, b"x")
                won.append(i)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == list(range(100))
    s.close()


def _proc(path, keys, q, name):
    try:
        _worker(path, keys, q, name)
    except BaseException as e:  # pragma: no cover
        q.put(repr(e))


def test_processes_race_on_the_same_keys(db):
    esg.Store(db).close()
    keys = [f"key-{i}" for i in range(KEYS)]
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_proc, args=(db, keys if n % 2 else keys[::-1], q, f"p{n}")) for n in range(4)]
    for p in procs:
        p.start()
    out = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    won = []
    for o in out:
        assert isinstance(o, list), o
        won.extend(o)
    assert sorted(won) == sorted(keys)  # each key completed exactly once across processes
    with esg.Store(db) as s:
        owners = {s.claim(k).result for k in keys}
        assert owners <= {b"p0", b"p1", b"p2", b"p3"}
    assert os.path.exists(db)


def test_gil_released_during_busy_wait(db):
    # While one thread waits in claim_wait (in C), another keeps running Python.
    with esg.Store(db) as a:
        a.claim("k")
        ticks = []
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                ticks.append(1)

        t = threading.Thread(target=spin)
        t.start()
        with esg.Store(db) as b:
            assert b.claim_wait("k", wait=0.3).status == "busy"
        stop.set()
        t.join()
        assert len(ticks) > 100


def test_a_forked_child_cannot_use_its_parents_store(db):
    # The child's copy shares the parent's connection, not its locks: every call is
    # refused and closing it writes nothing, while the parent's open group is kept.
    s = esg.Store(db, group_commit=60.0, group_commit_max=100000)
    held = s.claim("parent-1")  # pending in the parent's open group
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code, never raise out of pytest
        code = 0
        try:
            s.claim("child-1")
            code = 1  # the call went through
        except esg.StateError as e:
            code = 0 if "opened by process" in str(e) else 2
        except BaseException:
            code = 3
        try:
            s.close()
        except BaseException:
            code = code or 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    s.complete("parent-1", held.token, {"by": "parent"})
    s.close()
    with esg.Store(db) as again:
        assert again.claim("parent-1").status == "duplicate"
        assert again.claim("child-1").status == "new"  # the child wrote nothing


def _inside_clock():
    """A store clock (real time) whose event is set once the calling thread is the one named 'waiter'
    and so inside a call on the store (holding its lock)."""
    import time
    inside = threading.Event()

    def clock():
        if threading.current_thread().name == "waiter":
            inside.set()
        return time.time()

    clock.inside = inside
    return clock


def _wait_child(pid, timeout=15.0):
    """The child's exit code; a child still running after timeout is killed and reported hung."""
    import signal
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hung"


def test_a_forked_child_does_not_wait_for_a_lock_held_by_a_parents_thread(db):
    # A thread of the parent is inside a call on s (holding s's lock) at fork: in the
    # child that lock is never released. Every use must raise StateError at once and
    # closing must not wait for it (it used to block for ever).
    clock = _inside_clock()
    s = esg.Store(db, clock=clock)
    other = esg.Store(db)
    other.claim("held", lease=60.0)
    t = threading.Thread(target=lambda: s.claim_wait("held", wait=2.0), name="waiter")  # s's lock for 2 s
    t.start()
    assert clock.inside.wait(10)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for call in (lambda: s.put_event({"id": "x", "type": "t", "timestamp": 1}), lambda: s.now(),
                         lambda: s.__enter__()):
                try:
                    call()
                    code = code or 1
                except esg.StateError as e:
                    code = code or (0 if "opened by process" in str(e) else 2)
            s.close()
            code = code or (0 if s.closed else 5)
        except BaseException:
            code = code or 3
        os._exit(code)
    try:
        assert _wait_child(pid) == 0
    finally:
        t.join()
        s.close()
        other.close()


def test_a_forked_child_leaves_its_parents_egress_alone(db):
    # Closing or dropping the inherited engine in the child used to cancel the parent's
    # deliveries there: on_done ran in the child with 'cancelled'.
    s = esg.Store(db)
    c = s.claim("k")
    outcomes = []
    eg = esg.Egress(s, on_done=lambda r: outcomes.append((os.getpid(), r.outcome)), max_attempts=1,
                    connect_timeout=2.0)
    eg.submit("http://127.0.0.1:1/", b"{}", event_id="e1", claim=c)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for call in (eg.run, eg.drain, lambda: eg.submit("http://127.0.0.1:1/", b"{}", event_id="e2")):
                try:
                    call()
                    code = code or 1
                except esg.StateError as e:
                    code = code or (0 if "opened by process" in str(e) else 2)
            eg.close()
            code = code or (0 if eg.closed else 5)
            code = code or (6 if outcomes else 0)
        except BaseException:
            code = code or 3
        os._exit(code)
    assert _wait_child(pid) == 0
    assert outcomes == []
    assert eg.stats().queued + eg.stats().in_flight == 1  # still the parent's
    eg.drain()
    assert outcomes == [(os.getpid(), "exhausted")]
    eg.close()
    s.close()


def test_a_forked_child_dropping_an_egress_runs_no_callback(db):
    s = esg.Store(db)
    outcomes = []
    eg = esg.Egress(s, on_done=lambda r: outcomes.append(r.outcome))
    eg.submit("http://127.0.0.1:1/", b"{}", event_id="e1")
    pid = os.fork()
    if pid == 0:
        try:
            del eg  # the engine's finalizer, then the store's, run here
            del s
            import gc
            gc.collect()
        except BaseException:
            os._exit(3)
        os._exit(6 if outcomes else 0)
    assert _wait_child(pid) == 0
    eg.close()
    assert outcomes == ["cancelled"]
    s.close()


def _while_another_thread_waits(s, clock, drop):
    """Runs drop() while a thread is inside s.claim_wait("held", wait=1.5) (clock: _inside_clock);
    returns the seconds from that wait's start until drop() returned."""
    import time
    t = threading.Thread(target=lambda: s.claim_wait("held", wait=1.5), name="waiter")
    t0 = time.monotonic()
    t.start()
    assert clock.inside.wait(10)
    drop()
    waited = time.monotonic() - t0
    t.join()
    return waited


def test_a_forked_child_cannot_use_its_parents_cache_or_egress(db):
    # In the child every call raises StateError (the store refuses, the engine too); closing the
    # store there detaches both in libesg without a callback or a write, and their own close frees
    # them. The parent's are unharmed.
    s = esg.Store(db)
    cache = esg.Cache(s)
    cache.put("k", {"v": 1})
    snap = s.snapshot("src")
    snap.add("a", {"v": 1})  # a batch open in the parent
    outcomes = []
    eg = esg.Egress(s, on_done=lambda r: outcomes.append((os.getpid(), r.outcome)))
    eg.submit("http://127.0.0.1:1/", b"{}", event_id="e1", claim=s.claim("ck"))
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for call in (lambda: cache.get("k"), lambda: cache.put("k", 2), lambda: snap.add("b", {}), eg.run,
                         lambda: eg.submit("http://127.0.0.1:1/", b"{}", event_id="e2")):
                try:
                    call()
                    code = code or 1
                except esg.StateError as e:
                    code = code or (0 if "opened by process" in str(e) else 2)
            s.close()
            code = code or (0 if cache.closed and eg.closed and snap.closed else 4)
            cache.close()
            snap.close()
            eg.close()
            code = code or (6 if outcomes else 0)
        except BaseException:
            code = code or 3
        os._exit(code)
    assert _wait_child(pid) == 0
    assert cache.get("k").value == {"v": 1} and cache.stats().mem_entries == 1
    snap.add("b", {"v": 2})
    assert snap.finish().created == 2  # the parent's batch survived the child
    eg.close()
    assert outcomes == [(os.getpid(), "cancelled")]
    s.close()
    with esg.Store(db) as again:
        assert again.claim("ck").status == "new"  # released by the parent's cancel


def test_dropping_a_snapshot_waits_for_the_store_lock(db):
    # del snap commits its open batch: it used to do so without the store's lock while
    # another thread was inside a call on the same handle (and with the GIL held).
    import time
    other = esg.Store(db)
    clock = _inside_clock()
    s = esg.Store(db, clock=clock)
    other.claim("held", lease=60.0)
    snap = s.snapshot("src", batch=1000)
    snap.add("k", {"v": 1})  # the batch stays open
    ticks = []
    spin_stop = threading.Event()
    spinner = threading.Thread(target=lambda: [ticks.append(1) for _ in iter(spin_stop.is_set, True)])

    def drop():
        nonlocal snap
        spinner.start()
        del snap

    waited = _while_another_thread_waits(s, clock, drop)
    spin_stop.set()
    spinner.join()
    assert waited >= 1.4  # it waited for claim_wait (1.5 s) to give the lock back
    assert len(ticks) > 100  # with the GIL released
    s.close()
    other.close()


def test_dropping_an_egress_waits_for_the_store_lock(db):
    # Closing the engine in its finalizer releases its claims through the store: only with its lock.
    import time
    other = esg.Store(db)
    clock = _inside_clock()
    s = esg.Store(db, clock=clock)
    other.claim("held", lease=60.0)
    c = s.claim("mine")
    done = []
    eg = esg.Egress(s, on_done=lambda r: done.append(r.outcome))
    eg.submit("http://127.0.0.1:1/", b"{}", event_id="e1", claim=c)

    def drop():
        nonlocal eg
        del eg

    waited = _while_another_thread_waits(s, clock, drop)
    assert waited >= 1.4  # it waited for claim_wait (1.5 s) to give the lock back
    assert done == ["cancelled"]
    assert s.claim("mine").status == "new"  # the claim was released
    s.close()
    other.close()
