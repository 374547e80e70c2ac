"""esg.Gateway: libesg's gateway pipeline (esg/gateway.h) with Python steps.

    source -> parse -> filter -> claim -> latch check -> enrich -> transform
           -> latch mark -> sink -> complete | fault

The keywords mirror the Lua pipeline table of `esg run` (docs/gateway.md "A script");
this module turns them into the flat options of the C type esg._esg.Gateway, which runs
the loop with the GIL released and calls the steps with it taken back. See
docs/python.md, "Gateway".
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Union

from . import _esg
from . import sink as _sink
from . import source as _source

__all__ = ["Gateway"]

_LATCH_KEYS = {"key", "from", "from_", "to", "doc", "out_doc", "ttl", "flag"}
_ENRICH_KEYS = {"cache", "collect", "key", "load", "into", "required", "fn"}


def _invalid(msg: str) -> _esg.InvalidArgumentError:
    exc = _esg.InvalidArgumentError(msg)
    exc.code = _esg.ESG_EINVAL
    exc.name = _esg.status_name(_esg.ESG_EINVAL)
    exc.errmsg = msg
    return exc


def _callable(what: str, v: Any) -> Any:
    if v is not None and not callable(v):
        raise TypeError(f"{what} must be callable or None, not {type(v).__name__}")
    return v


def _table(what: str, v: Any, keys: set) -> Dict[str, Any]:
    if not isinstance(v, Mapping):
        raise TypeError(f"{what} must be a dict, not {type(v).__name__}")
    for k in v:
        if k not in keys:
            raise TypeError(f"{what}: unknown key {k!r} (expected one of {', '.join(sorted(keys))})")
    return dict(v)


def _latch_opts(latch: Any, flat: Dict[str, Any]) -> None:
    t = _table("latch", latch, _LATCH_KEYS)
    if "from" in t and "from_" in t:
        raise TypeError("latch: give from or from_, not both")
    side_from = t.get("from", t.get("from_"))
    if side_from is None and t.get("to") is None and not t.get("flag"):
        raise _invalid("latch needs from, to or flag")
    if (side_from is not None or t.get("to") is not None) and t.get("key") is None:
        raise _invalid("latch: from and to need key")
    flat.update(latch_key=_callable("latch key", t.get("key")), latch_from=side_from, latch_to=t.get("to"),
                latch_doc=_callable("latch doc", t.get("doc")),
                latch_out_doc=_callable("latch out_doc", t.get("out_doc")), latch_ttl=t.get("ttl"),
                latch_flag=bool(t.get("flag")))


def _enrich_opts(enrich: Any, flat: Dict[str, Any]) -> None:
    if callable(enrich) and not isinstance(enrich, Mapping):
        enrich = {"fn": enrich}
    t = _table("enrich", enrich, _ENRICH_KEYS)
    cache = t.get("cache")
    if cache is not None and not isinstance(cache, Mapping):
        raise TypeError(f"enrich cache must be a dict of esg.Cache options, not {type(cache).__name__}")
    collect = t.get("collect", False)
    if not isinstance(collect, bool) and not callable(collect):
        raise TypeError("enrich collect must be True, False or a callable (ev, ctx) picking the events to collect")
    flat.update(cache=dict(cache) if cache is not None else None, collect=collect is True,
                collect_if=collect if callable(collect) else None,
                enrich_key=_callable("enrich key", t.get("key")), load=_callable("enrich load", t.get("load")),
                enrich_into=t.get("into"), enrich_required=bool(t.get("required")),
                enrich_fn=_callable("enrich fn", t.get("fn")))


def _sink_opts(sink: Any, flat: Dict[str, Any]) -> None:
    if sink is None:
        sink = _sink.stdout()
    elif not isinstance(sink, _sink.Sink):
        if not callable(sink):
            raise TypeError(f"sink must be an esg.sink descriptor or a callable (out, ctx), not {type(sink).__name__}")
        sink = _sink.callback(sink)
    k = sink.kind
    if k == "stdout":
        flat.update(sink="file", sink_fd=1)
    elif k == "jsonl":
        flat.update(sink="file", sink_path=sink.path)
    elif k == "eventlog":
        flat.update(sink="eventlog", eventlog_key=sink.key, eventlog_ttl=sink.ttl)
    elif k == "callback":
        flat.update(sink="callback", write=sink.fn)
    elif k == "http":
        flat.update(sink="http", http_url=sink.url, http_method=sink.method, http_headers=sink.headers,
                    http_body=sink.body, egress=dict(sink.options) if sink.options else None,
                    http_rerender=sink.rerender, on_retry=sink.on_retry)
    else:
        raise ValueError(f"unknown sink kind {k!r}")


def _source_name(src: Any) -> Optional[str]:
    """How fault records name the source (at line N of NAME), as `esg run` names it."""
    if isinstance(src, _source.Source):
        return {"jsonl": "stdin" if src.path == "-" else src.path}.get(src.kind, src.kind)
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        return "stdin" if path == "-" else path
    if isinstance(src, bytes):
        return "stdin" if src == b"-" else os.fsdecode(src)
    if isinstance(src, int) and not isinstance(src, bool):
        return "fd %d" % src
    return None if src is None else "lines"


def _source_of(src: Any):
    """(kind, argument) for run(): "run" with a path, an fd or an iterable; "replay" with its filter."""
    if src is None:
        return "run", "-"
    if isinstance(src, _source.Source):
        if src.kind == "jsonl":
            return "run", src.path
        if src.kind == "lines":
            return "run", iter(src.lines)
        if src.kind == "replay":
            return "replay", src.filter
        raise ValueError(f"unknown source kind {src.kind!r}")
    if isinstance(src, (str, bytes, os.PathLike)):
        return "run", src
    if isinstance(src, int) and not isinstance(src, bool):
        return "run", src
    try:
        return "run", iter(src)
    except TypeError:
        raise TypeError("source must be an esg.source descriptor, a path, a file descriptor or an iterable "
                        f"of events, not {type(src).__name__}") from None


class Gateway(_esg.Gateway):
    """The gateway pipeline on a Store, with Python steps (see docs/python.md "Gateway").

    Gateway(store, *, name=None, source=None, filter=None, idempotence=True, key=None,
            hash=None, entity=None, lease=30.0, ttl=3600.0, echo=None, latch=None,
            enrich=None, transform=None, sink=None, on_fault=None, source_name=None,
            fault_note=None, max_line=0)

    Steps get (ev, ctx): ev the event as a dict (decoded once per event and shared by
    its steps), ctx an esg.GatewayContext (store, name, line, event_id, event, now(),
    log()). A step that raises makes the event a fault of its stage ("Type: message").
    """

    def __new__(cls, store: Any, *, name: Optional[str] = None, source: Any = None,
                filter: Optional[Callable[[Any, Any], Any]] = None, idempotence: bool = True,
                key: Optional[Callable[[Any, Any], Optional[str]]] = None, hash: Any = None,
                entity: Optional[Callable[[Any, Any], Any]] = None, lease: float = 30.0, ttl: float = 3600.0,
                echo: Optional[Callable[[Any, Any], Any]] = None, latch: Optional[Mapping[str, Any]] = None,
                enrich: Any = None, transform: Optional[Callable[[Any, Any], Any]] = None, sink: Any = None,
                on_fault: Optional[Callable[[Any], Any]] = None, source_name: Optional[str] = None,
                fault_note: Optional[str] = None, max_line: int = 0) -> "Gateway":
        if not isinstance(idempotence, bool):
            raise TypeError("idempotence must be True or False")
        if hash is not None and hash is not False and not callable(hash):
            raise TypeError("hash must be None (SHA-256 of the bytes), False (no check) or a callable (ev, ctx)")
        if source is not None:
            _source_of(source)  # a bad source fails here, not at run()
            if source_name is None:
                source_name = _source_name(source)
        flat: Dict[str, Any] = dict(
            name=name, filter=_callable("filter", filter), no_idempotence=not idempotence,
            key=_callable("key", key), hash=hash if callable(hash) else None, no_hash=hash is False,
            entity=_callable("entity", entity), lease=lease, ttl=ttl, echo=_callable("echo", echo),
            transform=_callable("transform", transform), on_fault=_callable("on_fault", on_fault),
            source_name=source_name, fault_note=fault_note, max_line=max_line)
        if latch is not None:
            _latch_opts(latch, flat)
        if enrich is not None:
            _enrich_opts(enrich, flat)
        _sink_opts(sink, flat)
        self = super().__new__(cls, store, **flat)
        self._source = source
        return self

    def run(self, source: Any = None, *, progress: Optional[Callable[[Dict[str, int]], Any]] = None
            ) -> Dict[str, int]:
        """Runs a source to its end, then waits for every delivery and commits.

        source: an esg.source descriptor, a path of JSON lines ("-": stdin), an open file
        descriptor, or an iterable of events (bytes, str, dicts, esg.Event); None: the
        Gateway's source, else stdin. The GIL is released while the C loop reads, waits
        and writes. progress(stats) is called about every 0.2 s (not for replay).
        Returns stats.
        """
        kind, arg = _source_of(self._source if source is None else source)
        if kind == "replay":
            return self._replay(**arg)
        return super().run(arg, progress=progress)

    def __repr__(self) -> str:
        return f"<esg.Gateway {self.name!r}{' closed' if self.closed else ''}>"
