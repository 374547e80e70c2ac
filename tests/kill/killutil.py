"""What the kill sweep (run_kill.py) reads the world with: the receiver's logs, the
runner's store (SQLite, read while no runner is alive) and a runner's connections."""
import json
import os
import sqlite3
import time


class Failed(Exception):
    pass


def fail(msg):
    raise Failed(msg)


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(x) for x in f if x.endswith("\n")]  # a line being written is not yet one


class Tail:
    """Counts a growing log's lines without reading it again from the start."""

    def __init__(self, path):
        self.path, self.at, self.n = path, 0, 0

    def count(self):
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                f.seek(self.at)
                data = f.read()
            self.at += len(data)
            self.n += data.count(b"\n")
        return self.n


def wait_for(cond, timeout, what):
    """Polls cond until it holds (the receiver's port file, a log's growth)."""
    end = time.time() + timeout
    while not cond():
        if time.time() > end:
            fail("timed out waiting for " + what)
        time.sleep(0.002)


def ports_of(pid, server_port):
    """The client ports of pid's TCP connections to server_port (Linux /proc), so requests
    of a killed run that the receiver reads after the kill are still known as its own."""
    inodes = set()
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:  # it ended meanwhile (a zombie has none)
        fds = []
    for fd in fds:
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                c = row.split()
                if c[9] in inodes and int(c[2].rsplit(":", 1)[1], 16) == server_port:
                    ports.add(int(c[1].rsplit(":", 1)[1], 16))
    return ports


class Store:
    """The runner's SQLite file, read while no runner is alive."""

    def __init__(self, path):
        self.path = path

    def _q(self, sql):
        if not os.path.exists(self.path):
            return []
        db = sqlite3.connect("file:%s?mode=ro" % self.path, uri=True)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def integrity(self):
        rows = self._q("PRAGMA integrity_check")
        return rows[0][0] if rows else "ok"

    def claims(self):
        """key -> (done, lease_until ms, result)"""
        try:
            return {k: (d, lu, r) for k, d, lu, r in self._q("SELECT key, done, lease_until, result FROM esg_claims")}
        except sqlite3.OperationalError:  # killed before the schema was committed
            return {}
