"""The package surface: docstrings on everything public, stubs that match the runtime, py.typed."""
import ast
import inspect
import os

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
