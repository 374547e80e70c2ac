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
