"""Type stubs for the esg package (the Python binding of libesg)."""
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Mapping, Optional, Sequence, TypeVar, Union

from . import _esg
from ._esg import (
    ABSENT as ABSENT,
    Cache as Cache,
    CacheEntry as CacheEntry,
    CacheStats as CacheStats,
    EgressResult as EgressResult,
    EgressStats as EgressStats,
    Fault as Fault,
    GatewayContext as GatewayContext,
    GatewayFault as GatewayFault,
    ResyncStats as ResyncStats,
    Snapshot as Snapshot,
    egress_retryable as egress_retryable,
    latch_flagged as latch_flagged,
    latch_mark as latch_mark,
    parse_retry_after as parse_retry_after,
    EVENT_MAX_BYTES as EVENT_MAX_BYTES,
    HASH_MAX as HASH_MAX,
    KEY_MAX as KEY_MAX,
    UUID_NS_EVENT as UUID_NS_EVENT,
    WEBHOOK_DEFAULT_TOLERANCE as WEBHOOK_DEFAULT_TOLERANCE,
    WEBHOOK_HEADER_ID as WEBHOOK_HEADER_ID,
    WEBHOOK_HEADER_SIGNATURE as WEBHOOK_HEADER_SIGNATURE,
    WEBHOOK_HEADER_TIMESTAMP as WEBHOOK_HEADER_TIMESTAMP,
    WEBHOOK_SECRET_PREFIX as WEBHOOK_SECRET_PREFIX,
    BusyError as BusyError,
    CallbackError as CallbackError,
    Claim as Claim,
    Entity as Entity,
    Error as Error,
    Event as Event,
    EventError as EventError,
    InputOutputError as InputOutputError,
    InvalidArgumentError as InvalidArgumentError,
    JSONError as JSONError,
    LockedError as LockedError,
    MismatchError as MismatchError,
    NoMemoryError as NoMemoryError,
    SchemaError as SchemaError,
    SignatureError as SignatureError,
    StateError as StateError,
    StoreError as StoreError,
    TimeoutError as TimeoutError,
    TokenError as TokenError,
    TooBigError as TooBigError,
    content_digest as content_digest,
    content_hash as content_hash,
    error_class as error_class,
    parse_event as parse_event,
    sha256 as sha256,
    status_name as status_name,
    strerror as strerror,
    uuid5 as uuid5,
    webhook_secret as webhook_secret,
    webhook_sign as webhook_sign,
    webhook_verify as webhook_verify,
)

from . import sink as sink, source as source
from .gateway import Gateway as Gateway

__version__: str
version: str
version_number: int

F = TypeVar("F", bound=Callable[..., Any])

class Store(_esg.Store):
    """The micro event store; adds batch() to the C type."""
    def batch(self) -> ContextManager["Store"]: ...
    def __enter__(self) -> "Store": ...

class Egress(_esg.Egress):
    """The HTTP delivery engine; adds submit_event to the C type."""
    def submit_event(
        self,
        event: Any,
        url: str,
        *,
        method: Optional[str] = None,
        headers: Any = None,
        claim: Any = None,
        context: Any = None,
        body: Any = None,
    ) -> None: ...

class ThreadLocalStore:
    """One Store per thread on one file."""
    path: str
    options: Dict[str, Any]
    def __init__(self, path: str, **options: Any) -> None: ...
    def get(self) -> Store: ...
    def close(self) -> None: ...
    def __enter__(self) -> "ThreadLocalStore": ...
    def __exit__(self, *exc: Any) -> None: ...

def payload_hash(event: Any) -> bytes: ...
def idempotent(
    store: Union[_esg.Store, ThreadLocalStore, Callable[[], _esg.Store]],
    *,
    key: Callable[[Any], str] = ...,
    ttl: float = 3600.0,
    lease: float = 30.0,
    wait: Optional[float] = None,
) -> Callable[[F], F]: ...

class Webhook:
    """Standard Webhooks v1 signer and verifier."""
    secrets: List[str]
    tolerance: float
    def __init__(self, secret: Union[str, Sequence[str]], tolerance: float = 300) -> None: ...
    def sign(self, msg_id: str, timestamp: int, payload: Union[bytes, str]) -> Dict[str, str]: ...
    def verify(self, headers: Mapping[str, str], payload: Union[bytes, str], now: Optional[float] = None) -> str: ...
