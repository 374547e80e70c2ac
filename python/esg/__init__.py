"""esg: the data parts of External Service Gateways (Python binding of libesg).

The store (claims, event log, entities, faults, correlation rules, latches,
cursor jobs, snapshot diffs, replay), the enrichment cache (esg.Cache), the HTTP
delivery engine (esg.Egress), the gateway pipeline (esg.Gateway with esg.sink and
esg.source; `python3 -m esg run`), events, hashes and deterministic ids, and Standard
Webhooks signing and verification, implemented in C (esg._esg),
plus the pure-Python conveniences built on them: Store.batch(), ThreadLocalStore,
the @idempotent decorator and the Webhook helper.

Times are seconds (float) in Python; outcomes such as 'new', 'duplicate',
'busy', 'stale' are values; errors are exceptions rooted at esg.Error, each
carrying the C status code (.code, .name) and the C library's text (.errmsg).

One Store per thread: share a database file between threads by opening one Store
in each (ThreadLocalStore does that), and between processes the same way.
"""
from __future__ import annotations

import contextlib
import functools
import json
import threading
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from . import _esg
from ._esg import (  # noqa: F401  (re-exported)
    ABSENT,
    Cache,
    CacheEntry,
    CacheStats,
    EgressResult,
    EgressStats,
    Fault,
    GatewayContext,
    GatewayFault,
    ResyncStats,
    Snapshot,
    egress_retryable,
    latch_flagged,
    latch_mark,
    parse_retry_after,
    EVENT_MAX_BYTES,
    HASH_MAX,
    KEY_MAX,
    UUID_NS_EVENT,
    WEBHOOK_DEFAULT_TOLERANCE,
    WEBHOOK_HEADER_ID,
    WEBHOOK_HEADER_SIGNATURE,
    WEBHOOK_HEADER_TIMESTAMP,
    WEBHOOK_SECRET_PREFIX,
    BusyError,
    CallbackError,
    Claim,
    Entity,
    Error,
    Event,
    EventError,
    InputOutputError,
    InvalidArgumentError,
    JSONError,
    LockedError,
    MismatchError,
    NoMemoryError,
    SchemaError,
    SignatureError,
    StateError,
    StoreError,
    TimeoutError,
    TokenError,
    TooBigError,
    content_digest,
    content_hash,
    error_class,
    parse_event,
    sha256,
    status_name,
    strerror,
    uuid5,
    webhook_secret,
    webhook_sign,
    webhook_verify,
)

from . import sink, source  # noqa: E402  (the Gateway's sinks and sources)
from .gateway import Gateway  # noqa: E402

__version__: str = _esg.__version__
version: str = _esg.version
version_number: int = _esg.version_number

__all__ = [
    "Store", "ThreadLocalStore", "idempotent", "payload_hash", "Webhook",
    "Cache", "CacheEntry", "CacheStats", "ABSENT", "Fault", "ResyncStats", "Snapshot",
    "Egress", "EgressResult", "EgressStats", "egress_retryable", "parse_retry_after",
    "Gateway", "GatewayContext", "GatewayFault", "sink", "source",
    "latch_flagged", "latch_mark",
    "Claim", "Entity", "Event", "parse_event", "sha256", "content_hash", "content_digest", "uuid5",
    "strerror", "status_name", "error_class", "webhook_sign", "webhook_verify", "webhook_secret",
    "Error", "InvalidArgumentError", "NoMemoryError", "MismatchError", "TokenError", "EventError",
    "JSONError", "StoreError", "LockedError", "SchemaError", "StateError", "TooBigError",
    "TimeoutError", "InputOutputError", "CallbackError", "SignatureError", "BusyError",
    "UUID_NS_EVENT", "KEY_MAX", "HASH_MAX", "EVENT_MAX_BYTES",
    "WEBHOOK_HEADER_ID", "WEBHOOK_HEADER_TIMESTAMP", "WEBHOOK_HEADER_SIGNATURE",
    "WEBHOOK_SECRET_PREFIX", "WEBHOOK_DEFAULT_TOLERANCE",
]

EventLike = Union[Event, Mapping[str, Any], bytes, str]


def _set_error(exc: Error, code: int, errmsg: str) -> Error:
    exc.code = code
    exc.name = status_name(code)
    exc.errmsg = errmsg
    return exc


class Store(_esg.Store):
    """The micro event store in one SQLite file (see esg._esg.Store for the methods).

    Store(path, *, clock=None, durability="normal", busy_timeout=5.0,
          group_commit=0.0, group_commit_max=0)

    - clock: a callable returning now in seconds since the epoch (default: the
      real clock); tests pass a fake one to move time without sleeping.
    - durability: "normal" (survives a process crash) or "full" (power loss too).
    - busy_timeout: seconds to wait for another process's write lock (0 = 5 s).
    - group_commit: seconds writes may accumulate in one open transaction before
      they are committed (0 = each call commits); group_commit_max caps the
      writes per group (0 = 1000). flush() or close() commits the open group.

    Use one Store per thread (see ThreadLocalStore); a Store is a context
    manager that closes on exit.
    """

    @contextlib.contextmanager
    def batch(self) -> Iterator["Store"]:
        """Runs the calls in the with-block in one transaction.

        Commits when the block ends normally, rolls back when it raises.
        Batches do not nest (StateError).
        """
        self.begin()
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.commit()


class Egress(_esg.Egress):
    """The HTTP delivery engine (see esg._esg.Egress for the methods and options).

    Egress(store=None, *, on_done=None, on_retry=None, clock=None, max_in_flight=16,
           max_attempts=5, max_elapsed=60.0, backoff_base=0.1, backoff_cap=10.0,
           connect_timeout=5.0, timeout=30.0, rate=0, burst=0, ...)

    submit() queues one request; run()/drain() drive them with the GIL released;
    each finished delivery is handed to on_done(EgressResult) or kept for
    results(). On a store, success completes the request's claim and exhausted
    or refused deliveries become faults (Store.faults(), resubmit()).
    """

    def submit_event(self, event: Any, url: str, *, method: Optional[str] = None,
                     headers: Any = None, claim: Any = None, context: Any = None,
                     body: Any = None) -> None:
        """Queues the delivery of an event: its id is the idempotency key, its
        partitionKey orders it, its JSON is the body (unless body is given) and
        what a fault keeps."""
        ev = parse_event(event)
        self.submit(url, ev if body is None else body, event_id=ev.id, method=method, headers=headers,
                    partition_key=ev.partition_key, claim=claim, event=ev, context=context)


class ThreadLocalStore:
    """One Store per thread on one file: the documented way to share a store.

    ThreadLocalStore(path, **options) opens a Store(path, **options) in each
    thread on its first get() and keeps it for that thread. close() closes them all.
    """

    def __init__(self, path: str, **options: Any) -> None:
        self.path = path
        self.options = options
        self._local = threading.local()
        self._lock = threading.Lock()
        self._stores: List[Store] = []
        self._closed = False

    def get(self) -> Store:
        """This thread's Store, opened on first use."""
        s = getattr(self._local, "store", None)
        if s is None or s.closed:
            if self._closed:
                raise _set_error(StateError("the ThreadLocalStore is closed"), _esg.ESG_ESTATE,
                                 "the ThreadLocalStore is closed")
            s = Store(self.path, **self.options)
            self._local.store = s
            with self._lock:
                self._stores.append(s)
        return s

    def close(self) -> None:
        """Closes every thread's Store. Closing twice is fine."""
        self._closed = True
        with self._lock:
            stores, self._stores = self._stores, []
        for s in stores:
            s.close()

    def __enter__(self) -> "ThreadLocalStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _store_getter(store: Any) -> Callable[[], Any]:
    if isinstance(store, _esg.Store):
        return lambda: store
    if isinstance(store, ThreadLocalStore):
        return store.get
    if callable(store):
        return store
    raise TypeError("store must be a Store, a ThreadLocalStore or a callable returning a Store")


def _default_key(event: Any) -> str:
    if isinstance(event, (bytes, bytearray, memoryview, str)):
        return parse_event(event).id
    return event["id"]


def payload_hash(event: Any) -> bytes:
    """The payload hash @idempotent claims with: SHA-256 of the event's canonical JSON.

    Key order and white space do not change it; the event may be a dict, an
    Event, or JSON text (bytes or str).
    """
    return content_digest(event)


def idempotent(
    store: Any,
    *,
    key: Callable[[Any], str] = _default_key,
    ttl: float = 3600.0,
    lease: float = 30.0,
    wait: Optional[float] = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: run a handler at most once per event key, repeating its result.

    @esg.idempotent(store, key=lambda ev: ev["id"], ttl=3600, lease=30, wait=None)
    def handle(event, ...): ...

    store is a Store, a ThreadLocalStore or a callable returning this thread's
    Store. The first call for a key claims it (payload hash: SHA-256 of the
    event's canonical JSON), runs the function and stores its result as JSON
    for ttl seconds. Then:
    - a repeated event returns the stored result (decoded from JSON) without
      running the function;
    - while another caller holds the key (its lease of `lease` seconds
      running), raises BusyError, or with wait=seconds waits up to that long
      for the holder to finish (then returns its result, or runs if it gave up);
    - if the function raises, the claim is released so a retry can run, and the
      exception propagates;
    - a key seen before with a different payload raises MismatchError.
    The result must be JSON-able (else TypeError, and the claim is released).
    """
    get_store = _store_getter(store)
    if not callable(key):
        raise TypeError("key must be callable")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(event: Any, *args: Any, **kwargs: Any) -> Any:
            s = get_store()
            k = key(event)
            h = payload_hash(event)
            if wait is None:
                c = s.claim(k, h, lease, ttl)
            else:
                c = s.claim_wait(k, h, lease, ttl, wait)
            if c.status == "duplicate":
                return None if c.result is None else json.loads(c.result)
            if c.status == "busy":
                msg = f'claim "{k}" is in progress by another owner (lease until {c.lease_until:.3f})'
                exc = _set_error(BusyError(msg), _esg.ESG_BUSY, msg)
                exc.lease_until = c.lease_until
                raise exc
            try:
                result = fn(event, *args, **kwargs)
                data = json.dumps(result, separators=(",", ":"), allow_nan=False)
            except BaseException:
                try:
                    s.release(k, c.token)
                except TokenError:
                    pass  # the lease ran out and someone else took over: nothing to release
                raise
            s.complete(k, c.token, data)
            return result

        wrapper.__wrapped__ = fn
        return wrapper

    return decorate


def _header(headers: Any, name: str) -> str:
    """A header value by case-insensitive name ("" when absent)."""
    v = headers.get(name)
    if v is None and isinstance(headers, dict):
        for k, val in headers.items():
            if isinstance(k, str) and k.lower() == name:
                v = val
                break
    return "" if v is None else v


class Webhook:
    """Standard Webhooks v1 signer and verifier (HMAC-SHA256, via libesg's C API).

    Webhook(secret, tolerance=300): secret is "whsec_<base64>" or raw text, or a
    list of secrets accepted during a rotation (the first one signs).
    """

    def __init__(self, secret: Union[str, Sequence[str]], tolerance: float = WEBHOOK_DEFAULT_TOLERANCE) -> None:
        secrets = [secret] if isinstance(secret, str) else list(secret)
        if not secrets or not all(isinstance(s, str) for s in secrets):
            raise TypeError("secret must be a str or a non-empty list of str")
        self.secrets = secrets
        self.tolerance = tolerance

    def sign(self, msg_id: str, timestamp: int, payload: Union[bytes, str]) -> Dict[str, str]:
        """The three headers (webhook-id, webhook-timestamp, webhook-signature) to send payload with."""
        return {
            WEBHOOK_HEADER_ID: msg_id,
            WEBHOOK_HEADER_TIMESTAMP: str(timestamp),
            WEBHOOK_HEADER_SIGNATURE: webhook_sign(self.secrets[0], msg_id, timestamp, payload),
        }

    def verify(self, headers: Mapping[str, str], payload: Union[bytes, str], now: Optional[float] = None) -> str:
        """Verifies a received webhook and returns its id (claim it to dedupe).

        headers: any mapping with .get (http.server's self.headers, a dict);
        payload: the raw body. Raises SignatureError (forged, tampered, unknown
        secret: answer 401), TimeoutError (timestamp outside the tolerance: a
        possible replay, 401) or InvalidArgumentError (missing or malformed
        headers: 400), each with the C library's text.
        """
        if not hasattr(headers, "get"):
            raise TypeError("headers must be a mapping")
        msg_id = _header(headers, WEBHOOK_HEADER_ID)
        webhook_verify(self.secrets, msg_id, _header(headers, WEBHOOK_HEADER_TIMESTAMP),
                       _header(headers, WEBHOOK_HEADER_SIGNATURE), payload, now=now, tolerance=self.tolerance)
        return msg_id
