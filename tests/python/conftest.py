"""Shared fixtures for the esg Python tests: a fresh database path and a fake clock."""
import os
import sys

import pytest

import esg

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "..", "examples", "python")


class FakeClock:
    """A clock the tests move by hand: time passes only when told (seconds)."""

    def __init__(self, start=1_700_000_000.0):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def db(tmp_path):
    """A path for a fresh store file."""
    return str(tmp_path / "esg.db")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(db, clock):
    with esg.Store(db, clock=clock) as s:
        yield s


def event(i, **extra):
    ev = {"id": f"evt-{i}", "type": "thing-updated", "timestamp": 1_700_000_000_000 + i,
          "partitionKey": f"thing-{i % 10}", "thing": {"id": f"thing-{i % 10}", "price": i}}
    ev.update(extra)
    return ev


@pytest.fixture
def examples_path():
    sys.path.insert(0, EXAMPLES)
    yield EXAMPLES
    sys.path.remove(EXAMPLES)
