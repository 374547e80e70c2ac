"""Events, hashes, deterministic ids and the exception tree."""
import hashlib
import json
import uuid

import pytest

import esg


def test_parse_event_forms():
    d = {"id": "e1", "type": "t", "timestamp": 1700000000000, "partitionKey": "p", "tags": {"a": "b"}, "x": [1]}
    for form in (d, json.dumps(d), json.dumps(d).encode(), bytearray(json.dumps(d).encode()),
                 memoryview(json.dumps(d).encode())):
        ev = esg.parse_event(form)
        assert isinstance(ev, esg.Event)
        assert (ev.id, ev.type, ev.timestamp, ev.partition_key) == ("e1", "t", 1700000000000, "p")
        assert ev["x"] == [1] and ev.get("nope") is None and ev.get("nope", 5) == 5 and "tags" in ev
        assert ev.to_dict() == d
        assert ev.hash == hashlib.sha256(ev.json).digest()
    assert esg.parse_event(ev) is ev
    assert esg.Event(d) == esg.parse_event(json.dumps(d, separators=(",", ":"), ensure_ascii=False))
    assert esg.parse_event({"id": "a", "type": "t", "timestamp": 0}).partition_key is None
    assert "e1" in repr(ev)
    with pytest.raises(KeyError):
        ev["nope"]


def test_parse_event_errors():
    with pytest.raises(esg.EventError, match='"type"'):
        esg.parse_event({"id": "a", "timestamp": 1})
    with pytest.raises(esg.EventError, match='"id" is empty'):
        esg.parse_event({"id": "", "type": "t", "timestamp": 1})
    with pytest.raises(esg.JSONError) as ei:
        esg.parse_event("{oops")
    assert isinstance(ei.value, ValueError) and ei.value.code == -6 and ei.value.errmsg
    with pytest.raises(esg.JSONError):
        esg.parse_event(b'{"id":"a","type":"t","timestamp":1} trailing')
    with pytest.raises(esg.TooBigError):
        esg.parse_event(b" " * (esg.EVENT_MAX_BYTES + 1))
    for bad in (None, 1, 1.5, [1], object()):
        with pytest.raises(TypeError):
            esg.parse_event(bad)
    with pytest.raises(esg.JSONError):
        esg.parse_event({"id": "a", "type": "t", "timestamp": 1, "x": float("inf")})


def test_hashes_and_uuid5():
    assert esg.sha256(b"abc") == hashlib.sha256(b"abc").digest()
    assert esg.sha256("é") == hashlib.sha256("é".encode()).digest()
    h = esg.content_hash({"b": 1, "a": [1, {"d": 2, "c": 3}]})
    assert h == esg.content_hash('{ "a": [1, {"c": 3, "d": 2}], "b": 1 }') and len(h) == 64
    assert esg.content_digest({"a": 1}) == bytes.fromhex(esg.content_hash({"a": 1}))
    assert esg.content_hash(esg.parse_event({"type": "t", "id": "x", "timestamp": 1})) == \
        esg.content_hash({"id": "x", "type": "t", "timestamp": 1})
    with pytest.raises(esg.JSONError):
        esg.content_hash(b"{bad")
    with pytest.raises(TypeError):
        esg.sha256(5)
    assert esg.uuid5("hello", str(uuid.NAMESPACE_DNS)) == str(uuid.uuid5(uuid.NAMESPACE_DNS, "hello"))
    assert esg.uuid5("x") == str(uuid.uuid5(uuid.UUID(esg.UUID_NS_EVENT), "x"))
    assert esg.uuid5(b"x", namespace=esg.UUID_NS_EVENT) == esg.uuid5("x")
    with pytest.raises(esg.InvalidArgumentError):
        esg.uuid5("x", "not-a-uuid")
    with pytest.raises(TypeError):
        esg.uuid5(1)


def test_exception_tree_and_mapping():
    pairs = {-1: esg.InvalidArgumentError, -2: esg.NoMemoryError, -3: esg.MismatchError, -4: esg.TokenError,
             -5: esg.EventError, -6: esg.JSONError, -7: esg.StoreError, -8: esg.LockedError,
             -9: esg.SchemaError, -10: esg.StateError, -11: esg.TooBigError, -12: esg.TimeoutError,
             -13: esg.InputOutputError, -14: esg.CallbackError, -15: esg.SignatureError, 3: esg.BusyError}
    for code, cls in pairs.items():
        assert esg.error_class(code) is cls and issubclass(cls, esg.Error)
        assert cls.__doc__ and cls.__module__ == "esg"
    assert esg.error_class(-999) is esg.Error
    assert issubclass(esg.TimeoutError, TimeoutError) and issubclass(esg.EventError, ValueError)
    assert issubclass(esg.NoMemoryError, MemoryError) and issubclass(esg.InputOutputError, OSError)
    assert esg.strerror(-3) == "key already used with a different payload"
    assert esg.status_name(2) == "DUPLICATE" and esg.status_name(-3) == "EMISMATCH"
    assert esg.__version__ == esg.version and isinstance(esg.version_number, int)


def test_hostile_envelopes():
    # One parser decides for every binding: duplicate members, NULs and invalid UTF-8
    # are refused with an error that says which (issue 14).
    with pytest.raises(esg.EventError, match='"id" twice'):
        esg.Event('{"id":"a","type":"t","timestamp":1,"id":"b"}')
    with pytest.raises(esg.EventError, match="NUL"):
        esg.Event('{"id":"a\\u0000b","type":"t","timestamp":1}')
    with pytest.raises(esg.JSONError, match="UTF-8"):
        esg.Event(b'{"id":"\xc0\xaf","type":"t","timestamp":1}')
    assert esg.Event('{"id":"caf\u00e9","type":"t","timestamp":1}').id == "caf\u00e9"
