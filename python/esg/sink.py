"""Sinks of an esg.Gateway: where its outputs go (docs/python.md, "Gateway").

Each function returns a descriptor to pass as Gateway(sink=...); the gateway opens it.
A plain callable fn(out, ctx) is a sink too (the same as callback(fn)).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["Sink", "stdout", "jsonl", "eventlog", "callback", "http", "EGRESS_OPTIONS"]

# The egress engine options the HTTP sink takes (esg.Egress's, without its callbacks and
# complete_on_fault: the gateway completes a faulted event's claim with its fault).
EGRESS_OPTIONS: Tuple[str, ...] = (
    "max_in_flight", "max_attempts", "max_elapsed", "backoff_base", "backoff_cap", "connect_timeout",
    "timeout", "rate", "burst", "idempotency_header", "content_type", "max_response_bytes", "claim_lease",
    "seed", "circuit_failures", "circuit_open",
)

Headers = Union[Mapping[str, str], Sequence[Union[str, Tuple[str, str]]]]


class Sink:
    """A sink descriptor: kind is "stdout", "jsonl", "eventlog", "callback" or "http"."""

    __slots__ = ("kind", "path", "key", "ttl", "fn", "url", "method", "headers", "body", "options", "rerender",
                 "on_retry")

    def __init__(self, kind: str, *, path: Optional[str] = None, key: Optional[str] = None,
                 ttl: Optional[float] = None, fn: Optional[Callable[..., Any]] = None, url: Any = None,
                 method: Optional[str] = None, headers: Optional[Headers] = None,
                 body: Optional[Callable[..., Any]] = None, options: Optional[dict] = None,
                 rerender: bool = False, on_retry: Optional[Callable[..., Any]] = None) -> None:
        self.kind = kind
        self.path = path
        self.key = key
        self.ttl = ttl
        self.fn = fn
        self.url = url
        self.method = method
        self.headers = headers
        self.body = body
        self.options = options or {}
        self.rerender = rerender
        self.on_retry = on_retry

    def __repr__(self) -> str:
        fields = {"jsonl": ("path",), "eventlog": ("key", "ttl"), "callback": ("fn",),
                  "http": ("url", "method")}.get(self.kind, ())
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in fields)
        return f"esg.sink.{self.kind}({args})"


def stdout() -> Sink:
    """Each output as a line on file descriptor 1 (written directly, not through sys.stdout)."""
    return Sink("stdout")


def jsonl(path: Union[str, "os.PathLike[str]"]) -> Sink:
    """Each output as a line appended to the file path ("-": stdout), one write per line."""
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError("path must be str or os.PathLike[str]")
    return stdout() if path == "-" else Sink("jsonl", path=path)


def eventlog(key: Optional[str] = None, ttl: Optional[float] = None) -> Sink:
    """Outputs (which must be event envelopes) stored once per id in the store's event log,
    under key (default: each one's partitionKey), expiring after ttl seconds (None: never)."""
    if key is not None and not isinstance(key, str):
        raise TypeError("key must be str or None")
    return Sink("eventlog", key=key, ttl=ttl)


def callback(fn: Callable[[Any, Any], Any]) -> Sink:
    """fn(out, ctx) for each output: out is what transform returned (see Gateway)."""
    if not callable(fn):
        raise TypeError("fn must be callable")
    return Sink("callback", fn=fn)


def http(url: Union[str, Callable[[Any, Any], str]], method: Optional[str] = None,
         headers: Optional[Headers] = None, body: Optional[Callable[[Any, Any], Any]] = None,
         rerender: bool = False, on_retry: Optional[Callable[[str, int, int, float, str], Any]] = None,
         **egress_options: Any) -> Sink:
    """Each output as an HTTP request through libesg's egress engine (esg.Egress's options).

    url: a str, or url(out, ctx) -> str per event. method: default "POST". headers: a
    mapping or a list of "Name: value". body(out, ctx) -> bytes, str or a JSON-able value
    (default: the output). The request carries the event id in Idempotency-Key and goes in
    order per partitionKey; success completes the event's claim, a refusal or exhausted
    retries record a fault (stage "deliver") and complete the claim with it. The request is
    rendered once: a retry, a takeover after a crash and a resubmission send the bytes its
    first attempt stored (the outbox); rerender=True makes resubmissions through this sink
    render again (a fixed transform, another url). on_retry(event_id, attempt, http_status,
    delay, error) is called at each retry scheduled, after it is counted in stats["retries"]
    (as the Lua sink's and esg.Egress's).
    """
    if not (isinstance(url, str) or callable(url)):
        raise TypeError("url must be a str or a callable (out, ctx) -> str")
    if body is not None and not callable(body):
        raise TypeError("body must be a callable (out, ctx) -> bytes | str | JSON-able, or None")
    if on_retry is not None and not callable(on_retry):
        raise TypeError("on_retry must be a callable (event_id, attempt, http_status, delay, error), or None")
    for k in egress_options:
        if k not in EGRESS_OPTIONS:
            raise TypeError(f"sink.http() got an unexpected keyword argument {k!r}")
    return Sink("http", url=url, method=method, headers=headers, body=body, options=dict(egress_options),
                rerender=bool(rerender), on_retry=on_retry)
