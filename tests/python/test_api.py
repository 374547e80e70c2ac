"""The package surface: docstrings on everything public, stubs that match the runtime, py.typed."""
import ast
import inspect
import os

import pytest

import esg
import esg._esg as _esg

PKG = os.path.dirname(esg.__file__)


def _stub_names(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    names, members = set(), {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
            members[node.name] = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AnnAssign))
                                  if hasattr(n, "name")} | {
                n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return names, members


def test_py_typed_and_stubs_present():
    for f in ("py.typed", "__init__.pyi", "_esg.pyi"):
        assert os.path.exists(os.path.join(PKG, f)), f


def test_stubs_cover_the_runtime():
    names, _ = _stub_names(os.path.join(PKG, "__init__.pyi"))
    missing = [n for n in esg.__all__ if n not in names]
    assert not missing, missing
    cnames, cmembers = _stub_names(os.path.join(PKG, "_esg.pyi"))
    public = [n for n in dir(_esg) if not n.startswith("_")]
    assert not [n for n in public if n not in cnames]
    store_methods = {n for n in dir(_esg.Store) if not n.startswith("_")}
    assert not store_methods - cmembers["Store"]
    event_attrs = {n for n in dir(_esg.Event) if not n.startswith("_")}
    assert not event_attrs - cmembers["Event"]


def test_docstrings_on_everything_public():
    undocumented = []
    for name in esg.__all__:
        obj = getattr(esg, name)
        if callable(obj) and not (obj.__doc__ or "").strip():
            undocumented.append(name)
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for m, v in vars(obj).items():
                if not m.startswith("_") and callable(v) and not (getattr(v, "__doc__", "") or "").strip():
                    undocumented.append(f"{name}.{m}")
    for m in dir(_esg.Store):
        if not m.startswith("_") and not (getattr(_esg.Store, m).__doc__ or "").strip():
            undocumented.append("Store." + m)
    assert not undocumented, undocumented
    assert esg.__doc__ and _esg.__doc__


def test_out_of_range_and_mistyped_numbers_name_the_argument(tmp_path):
    # These used to surface Python's own texts ("int too large to convert to float",
    # "int too big to convert", "must be real number, not str") without the argument's name.
    with esg.Store(str(tmp_path / "n.db")) as s:
        with pytest.raises(ValueError, match="lease"):
            s.claim("k", lease=10**400)
        with pytest.raises(ValueError, match="ttl"):
            s.put_event({"id": "e", "type": "t", "timestamp": 1}, ttl=-(10**400))
        with pytest.raises(OverflowError, match="token"):
            s.complete("k", 2**64)
        with pytest.raises(OverflowError, match="max_value_bytes"):
            esg.Cache(s, max_value_bytes=2**70)
        with pytest.raises(OverflowError, match="version"):
            s.upsert("k", 2**63, {})
    with pytest.raises(TypeError, match="rate"):
        esg.Egress(rate="x")
    with pytest.raises(TypeError, match="rate"):
        esg.Egress(rate=True)
    with pytest.raises(ValueError, match="rate"):
        esg.Egress(rate=10**400)
    with esg.Egress(rate=2) as eg:  # an int rate is fine
        assert not eg.closed
