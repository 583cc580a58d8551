"""Every call site that names an RPC, statically (issue 11; used by
test_protocol_types.py).

:func:`find_stubs`: the functions that send an RPC whose name they get as a
parameter -- those that build ``/rpc/{name}``, then (to a fixpoint) those that
pass their own parameter on as the name to one they certainly call (an
imported function, ``module.function``, ``self.method``, or
``self.attr.method`` where ``self.attr = ImportedClass(...)``). :func:`call_sites`:
every call of a stub with a constant RPC name, and the fields of its body
where they can be seen (a dict display, a local dict's keys, keyword
arguments, what the stub adds itself). :func:`route_paths`: the raw paths
URLs are built with (``f"{addr}/chunk/{h}"``). :func:`check_site` and
:func:`check_route_path` compare them with the protocol.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("gfsfs", "chunkd", "master", "bench")

def sender_of(rel: str) -> str:
    """Which process the code at ``rel`` (a path under ROOT) runs in."""
    top = rel.split("/")[0]
    if top in ("chunkd", "master"):
        return top
    return "common" if rel.startswith("gfsfs/common/") else "client"


def sources() -> dict[str, str]:
    """rel path -> source, for every module of ours that may talk to a peer."""
    out = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            out[str(path.relative_to(ROOT))] = path.read_text()
    return out


# ---------------------------------------------------------------- stubs and call sites

@dataclass(frozen=True)
class Stub:
    """A function that sends the RPC named by its parameter ``name_index``
    (counted without ``self``), with the body at ``body_index`` or, when
    ``kw_fields``, its keyword arguments; ``extras``: fields it adds itself."""
    name: str
    where: str
    name_index: int
    body_index: int | None
    kw_fields: bool
    params: tuple[str, ...]
    extras: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CallSite:
    where: str                      # "path:line"
    sender: str
    rpc: str
    fields: frozenset[str]
    complete: bool                  # every field of the body is in ``fields``


@functools.cache
def functions(tree: ast.Module) -> list[tuple[Any, bool]]:
    """Every def in ``tree`` and whether it is a method."""
    nodes = list(ast.walk(tree))
    methods = {id(n) for c in nodes if isinstance(c, ast.ClassDef)
               for n in c.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return [(n, id(n) in methods) for n in nodes
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def call_params(fn: Any, method: bool) -> tuple[str, ...]:
    params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    return tuple(params[1:] if method and not static else params)


def callee(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def param_of(node: ast.AST | None) -> str | None:
    """The parameter an argument passes on: ``x`` or ``x or {}``."""
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
        node = node.values[0]
    return node.id if isinstance(node, ast.Name) else None


def positional(node: ast.Call, index: int | None) -> ast.expr | None:
    if index is None or index >= len(node.args):
        return None
    if any(isinstance(a, ast.Starred) for a in node.args[:index + 1]):
        return None
    return node.args[index]


def root_stub(rel: str, fn: Any, method: bool) -> Stub | None:
    """``fn`` builds ``.../rpc/{name}`` from its parameter ``name``."""
    params = call_params(fn, method)
    kwarg = fn.args.kwarg.arg if fn.args.kwarg else None
    for node in ast.walk(fn):
        if not isinstance(node, ast.JoinedStr):
            continue
        for a, b in zip(node.values, node.values[1:]):
            if (isinstance(a, ast.Constant) and str(a.value).endswith("/rpc/")
                    and isinstance(b, ast.FormattedValue) and param_of(b.value) in params):
                body = params.index("body") if "body" in params else None
                return Stub(fn.name, rel, params.index(param_of(b.value) or ""), body,
                            body is None and kwarg is not None, params)
    return None


def stored_keys(fn: Any, var: str) -> set[str]:
    """Constant keys ``fn`` stores into its variable ``var`` (``var["k"] = ...``)."""
    return {t.slice.value for n in ast.walk(fn) if isinstance(n, ast.Assign) for t in n.targets
            if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
            and t.value.id == var and isinstance(t.slice, ast.Constant)}


def pick(stubs: dict[tuple[str, str], Stub], node: ast.Call, rel: str,
         names: dict[str, tuple[str, str | None]], local: set[str]) -> list[Stub]:
    """The stubs a call may be of: the one it certainly runs if that is known;
    else, for ``obj.method(...)``, those of that name, this file's first."""
    key = resolve_exact(rel, node, names, local)
    if key is not None:
        return [stubs[key]] if key in stubs else []
    if not isinstance(node.func, ast.Attribute):
        return []
    found = [s for s in stubs.values() if s.name == node.func.attr]
    return [s for s in found if s.where == rel] or found


@functools.cache
def imports(tree: ast.Module) -> dict[str, tuple[str, str | None]]:
    """local name -> (module, name in it; None when the name is the module)."""
    out: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = (node.module, a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = (a.name if a.asname else
                                                         a.name.split(".")[0], None)
    return out


@functools.cache
def scope_names(tree: ast.Module) -> dict[str, tuple[str, str | None]]:
    """:func:`imports`, plus ``self.<attr>`` -> (module, class) for each
    attribute the file sets from an imported class (``self.x = Class(...)``),
    so that ``self.x.method(...)`` resolves to that class's method."""
    names = dict(imports(tree))
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)):
            continue
        module, name = names.get(node.value.func.id, ("", None))
        for t in node.targets:
            if (name and isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                    and t.value.id == "self"):
                names[f"self.{t.attr}"] = (module, name)
    return names


@functools.cache
def local_names(tree: ast.Module) -> set[str]:
    """A file's functions by name, and its methods as ``.name``."""
    return {f".{n.name}" if m else n.name for n, m in functions(tree)}


def module_rel(module: str) -> str:
    path = module.replace(".", "/")
    return f"{path}/__init__.py" if (ROOT / path).is_dir() else f"{path}.py"


def resolve_exact(rel: str, node: ast.Call, names: dict[str, tuple[str, str | None]],
                  local: set[str]) -> tuple[str, str] | None:
    """(file, def name) of what a call certainly runs: a function of this file
    (``local``: its functions, and its methods as ``.name``) or imported by
    name, ``module.function``, ``self.method`` or ``self.attr.method`` of an
    attribute made from an imported class (:func:`scope_names`); else None."""
    f = node.func
    if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute)
            and isinstance(f.value.value, ast.Name) and f.value.value.id == "self"):
        module, _cls = names.get(f"self.{f.value.attr}", ("", None))
        return (module_rel(module), f.attr) if module else None
    if isinstance(f, ast.Name):
        if f.id in local:
            return rel, f.id
        module, name = names.get(f.id, ("", None))
        return (module_rel(module), name) if name else None
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        if f.value.id == "self":
            return (rel, f.attr) if f".{f.attr}" in local else None
        module, name = names.get(f.value.id, ("", None))
        sub = module if name is None else f"{module}.{name}"     # import M / from P import M
        if module and (ROOT / module_rel(sub)).exists():
            return module_rel(sub), f.attr
    return None


@functools.cache
def calls_of(fn: Any) -> list[ast.Call]:
    return [n for n in ast.walk(fn) if isinstance(n, ast.Call)]


def wrapper_stub(rel: str, fn: Any, method: bool, scope: tuple[Any, set[str]],
                 known: dict[tuple[str, str], Stub]) -> Stub | None:
    """``fn`` passes its parameter on as the RPC name of a stub it certainly
    calls; ``scope``: its file's imports and local names."""
    params = call_params(fn, method)
    kwarg = fn.args.kwarg.arg if fn.args.kwarg else None
    names, local = scope
    for node in calls_of(fn):
        inner = known.get(resolve_exact(rel, node, names, local) or ("", ""))
        if inner is None or (inner.where, inner.name) == (rel, fn.name):
            continue
        named = param_of(positional(node, inner.name_index))
        if named not in params:
            continue
        body = param_of(positional(node, inner.body_index))
        extras = set(inner.extras) | (stored_keys(fn, body) if body else set())
        return Stub(fn.name, rel, params.index(named or ""),
                    params.index(body) if body in params else None,
                    body is not None and body == kwarg, params, frozenset(extras))
    return None


def find_stubs(trees: dict[str, ast.Module]) -> dict[tuple[str, str], Stub]:
    """(file, name) -> stub: the roots, then their wrappers (to a fixpoint)."""
    known: dict[tuple[str, str], Stub] = {}
    todo = [(rel, fn, method) for rel, tree in trees.items() for fn, method in functions(tree)]
    for rel, fn, method in todo:
        if (s := root_stub(rel, fn, method)) is not None:
            known[(rel, s.name)] = s
    scopes = {rel: (scope_names(tree), local_names(tree)) for rel, tree in trees.items()}
    # only a def that takes a parameter and makes a call can pass a name on
    todo = [(rel, fn, method) for rel, fn, method in todo
            if call_params(fn, method) and calls_of(fn)]
    changed = True
    while changed:
        changed = False
        for rel, fn, method in todo:
            if (rel, fn.name) not in known and (
                    s := wrapper_stub(rel, fn, method, scopes[rel], known)) is not None:
                known[(rel, s.name)] = s
                changed = True
    return known


def dict_keys(node: ast.AST | None) -> tuple[set[str], bool]:
    """The constant keys of a dict display, and whether they are all of it."""
    if node is None or isinstance(node, ast.Constant) and node.value is None:
        return set(), True
    if not isinstance(node, ast.Dict):
        return set(), False
    keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return keys, len(keys) == len(node.keys)


def local_keys(fn: Any, var: str) -> set[str]:
    """Keys ``fn`` gives its local dict ``var``: its displays, stores, updates."""
    keys = stored_keys(fn, var)
    for n in ast.walk(fn):
        if isinstance(n, (ast.Assign, ast.AnnAssign)):
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            if any(isinstance(t, ast.Name) and t.id == var for t in targets):
                keys |= dict_keys(n.value)[0]
        elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
              and n.func.attr == "update" and isinstance(n.func.value, ast.Name)
              and n.func.value.id == var):
            keys |= {kw.arg for kw in n.keywords if kw.arg}
            keys |= set().union(*(dict_keys(a)[0] for a in n.args)) if n.args else set()
    return keys


def site_fields(node: ast.Call, stub: Stub, fn: Any) -> tuple[set[str], bool]:
    """The fields a call of ``stub`` sends (those it can see), and whether
    that is all of them."""
    body = positional(node, stub.body_index)
    if body is None and stub.body_index is not None:
        body = next((kw.value for kw in node.keywords
                     if kw.arg == stub.params[stub.body_index]), None)
    if body is not None:
        if isinstance(body, ast.Name) and fn is not None:
            keys, complete = local_keys(fn, body.id), False
        else:
            keys, complete = dict_keys(body)
    elif stub.kw_fields:
        keys = {kw.arg for kw in node.keywords if kw.arg and kw.arg not in stub.params}
        complete = all(kw.arg for kw in node.keywords)
    else:
        keys, complete = set(), True
    return keys | stub.extras, complete


def call_sites(trees: dict[str, ast.Module],
               stubs: dict[tuple[str, str], Stub]) -> list[CallSite]:
    """Every call of a stub with a constant RPC name."""
    out = []
    for rel, tree in trees.items():
        names, local = scope_names(tree), local_names(tree)
        for fn, node in calls_in(tree):
            for stub in pick(stubs, node, rel, names, local):
                name = positional(node, stub.name_index)
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    keys, complete = site_fields(node, stub, fn)
                    out.append(CallSite(f"{rel}:{node.lineno}", sender_of(rel), name.value,
                                        frozenset(keys), complete))
                    break
    return out


def calls_in(tree: ast.Module) -> list[tuple[Any, ast.Call]]:
    """Every call, with the innermost def around it (None at module level)."""
    out: list[tuple[Any, ast.Call]] = []

    def visit(node: ast.AST, fn: Any) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn
            if isinstance(child, ast.Call):
                out.append((fn, child))
            visit(child, inner)
    visit(tree, None)
    return out


def route_paths(trees: dict[str, ast.Module]) -> list[tuple[str, str, str]]:
    """(where, sender, path) of every URL built as ``f"{addr}/path..."``."""
    out = []
    for rel, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.JoinedStr) or len(node.values) < 2:
                continue
            first, second = node.values[0], node.values[1]
            if (isinstance(first, ast.FormattedValue) and isinstance(second, ast.Constant)
                    and isinstance(second.value, str) and second.value[:2].strip("/").isalpha()
                    and second.value.startswith("/") and not second.value.startswith("/rpc/")):
                out.append((f"{rel}:{node.lineno}", sender_of(rel), second.value))
    return out


# ---------------------------------------------------------------- the checks

def peers() -> list[Any]:
    """The peer-pair modules of gfsfs.common.protocol."""
    import importlib
    return [importlib.import_module(f"gfsfs.common.protocol.{name}") for name in
            ("client_master", "chunkd_master", "master_chunkd", "client_chunkd",
             "master_master")]


def all_messages() -> dict[str, Any]:
    """Every message by name (each name is in one module only)."""
    return {name: m for mod in peers() for name, m in mod.MESSAGES.items()}


def sendable() -> dict[str, set[str]]:
    """sender -> the RPC names code running there may send: the messages of
    its own pairs, and for a chunkd the client -> chunkd messages it forwards
    (``FORWARDS``); a client never sends a ``FORWARD_ONLY`` one."""
    from gfsfs.common.protocol import client_chunkd
    out: dict[str, set[str]] = {"client": set(), "chunkd": set(), "master": set(),
                                "common": set()}
    for mod in peers():
        out[mod.SENDER] |= set(mod.MESSAGES)
    out["client"] -= set(client_chunkd.FORWARD_ONLY)
    out["chunkd"] |= set(client_chunkd.FORWARDS)
    return out


def check_site(site: CallSite, messages: dict[str, Any],
               allowed: dict[str, set[str]]) -> list[str]:
    """How a call site differs from the protocol."""
    from gfsfs.common.protocol.shapes import fields
    message = messages.get(site.rpc)
    if message is None:
        return [f"{site.where}: {site.rpc!r} is no message of the protocol"]
    out = []
    if site.rpc not in allowed.get(site.sender, set()):
        out.append(f"{site.where}: a {site.sender} sends {site.rpc!r}, a message of "
                   f"another peer pair")
    spec = fields(message.request)
    out += [f"{site.where}: {site.rpc} has no field {k!r}" for k in sorted(site.fields - set(spec))]
    if site.complete:
        missing = {k for k, (_t, required) in spec.items() if required} - site.fields
        out += [f"{site.where}: {site.rpc} without its field {k!r}" for k in sorted(missing)]
    return out


def check_route_path(where: str, sender: str, path: str) -> list[str]:
    """A URL path a peer builds must be a documented route of a server it
    talks to (a chunkd only forwards: ``FORWARD_ROUTES``; a master follows
    another master: ``master_master.ROUTES``)."""
    from gfsfs.common.protocol import client_chunkd, master_master
    routes = [r for mod in peers() for r in mod.ROUTES if r.prefix != "/"]
    if sender == "chunkd":
        routes = [r for r in routes if r.key in client_chunkd.FORWARD_ROUTES]
    elif sender == "master":
        routes = list(master_master.ROUTES)
    elif sender != "client":
        routes = []
    if any(path == r.prefix or path.startswith(r.prefix) for r in routes):
        return []
    return [f"{where}: {sender} builds a URL to {path!r}, no route it may use"]
