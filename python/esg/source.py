"""Sources of an esg.Gateway: where run() reads its events (docs/python.md, "Gateway").

Each function returns a descriptor for Gateway.run(source) or Gateway(source=...).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional, Union

__all__ = ["Source", "jsonl", "stdin", "lines", "replay"]


class Source:
    """A source descriptor: kind is "jsonl", "lines" or "replay"."""

    __slots__ = ("kind", "path", "lines", "filter")

    def __init__(self, kind: str, *, path: Optional[str] = None, lines: Optional[Iterable[Any]] = None,
                 filter: Optional[dict] = None) -> None:
        self.kind = kind
        self.path = path
        self.lines = lines
        self.filter = filter or {}

    def __repr__(self) -> str:
        if self.kind == "jsonl":
            return f"esg.source.jsonl({self.path!r})"
        if self.kind == "replay":
            return "esg.source.replay(" + ", ".join(f"{k}={v!r}" for k, v in self.filter.items()) + ")"
        return "esg.source.lines(...)"


def jsonl(path: Union[str, "os.PathLike[str]"]) -> Source:
    """JSON lines from the file path ("-": stdin), read by the C loop without blocking it."""
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError("path must be str or os.PathLike[str]")
    return Source("jsonl", path=path)


def stdin() -> Source:
    """JSON lines from standard input (file descriptor 0)."""
    return Source("jsonl", path="-")


def lines(iterable: Iterable[Any]) -> Source:
    """The events an iterable yields: bytes, str (one envelope each), dicts or esg.Event."""
    iter(iterable)  # TypeError now rather than in run()
    return Source("lines", lines=iterable)


def replay(corr_key: Optional[str] = None, type: Optional[str] = None, since: Optional[int] = None,
           until: Optional[int] = None) -> Source:
    """The store's events again (Store.replay's filter: since <= timestamp < until, epoch ms),
    in (timestamp, id) order with their ids: a consumer with idempotence sees duplicates."""
    return Source("replay", filter={"corr_key": corr_key, "type": type, "since": since, "until": until})
