"""Which request fields a handler reads, statically (issue 11; used by
test_protocol_types.py).

:func:`handler_reads` follows the request through a handler: ``need``/``opt``/
``opt_float``, ``req.get``, ``req[...]`` and ``"x" in req``, and into helpers
of the same module it hands the request to (``_name(req)``,
``Mutation.parse(req)``) with their arguments bound and constant conditions
folded, so ``_u32(req, "rdev", 0)`` is an optional read and ``_u32(req,
"mode")`` a required one. A read is *required* when every path that answers
reads it with ``need`` or ``req[...]``; paths that raise are failures and do
not count. A request handed whole to anything it cannot follow is reported.
:func:`check_reads` compares the reads with a message's request type.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

READERS = {"need": True, "opt": False, "opt_float": False}     # reader -> required
UNKNOWN: Any = type("Unknown", (), {"__repr__": lambda self: "UNKNOWN"})()
REQ: Any = type("Req", (), {"__repr__": lambda self: "REQ"})()

# ---------------------------------------------------------------- constant folding

def const(node: ast.AST | None, env: dict[str, Any]) -> Any:
    """The value of ``node`` if it is known from constants and ``env``."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        value = env.get(node.id, UNKNOWN)
        return UNKNOWN if value is REQ else value
    if (isinstance(node, ast.Compare) and len(node.ops) == 1
            and isinstance(node.ops[0], (ast.Is, ast.IsNot))
            and isinstance(node.comparators[0], ast.Constant)
            and node.comparators[0].value is None):
        left = const(node.left, env)
        return UNKNOWN if left is UNKNOWN else (left is None) == isinstance(node.ops[0], ast.Is)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        value = const(node.operand, env)
        return UNKNOWN if value is UNKNOWN else not value
    if isinstance(node, ast.BoolOp):
        values = [const(v, env) for v in node.values]
        decisive = (lambda v: not v) if isinstance(node.op, ast.And) else bool
        if any(v is not UNKNOWN and decisive(v) for v in values):
            return isinstance(node.op, ast.Or)
        return UNKNOWN if any(v is UNKNOWN for v in values) else isinstance(node.op, ast.And)
    return UNKNOWN


def const_items(node: ast.AST, env: dict[str, Any]) -> list[Any] | None:
    """The items of a tuple or list of known values, else None."""
    if not isinstance(node, (ast.Tuple, ast.List)):
        return None
    items = [const(e, env) for e in node.elts]
    return None if any(i is UNKNOWN for i in items) else items


# ---------------------------------------------------------------- handler reads

@dataclass
class Reads:
    fields: dict[str, bool] = field(default_factory=dict)   # name -> required
    problems: list[str] = field(default_factory=list)

    def note(self, name: Any, required: bool, where: str) -> None:
        if not isinstance(name, str):
            self.problems.append(f"{where}: a field name that is not a constant")
            return
        self.fields[name] = self.fields.get(name, False) or required


class Index:
    """A module's functions and classes' methods, by name."""

    def __init__(self, tree: ast.Module) -> None:
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.methods: dict[str, dict[str, ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[node.name] = node
            elif isinstance(node, ast.ClassDef):
                self.methods[node.name] = {n.name: n for n in node.body if isinstance(
                    n, (ast.FunctionDef, ast.AsyncFunctionDef))}

    def qualname(self, name: str) -> tuple[Any, str | None]:
        """The def of ``Class.method`` or ``function``, and its class."""
        if "." in name:
            cls, meth = name.split(".", 1)
            return self.methods.get(cls, {}).get(meth), cls
        return self.functions.get(name), None

    def resolve(self, func: ast.expr, cls: str | None) -> tuple[Any, str | None, bool]:
        """The def a call of ``func`` runs (inside class ``cls``): (def, its
        class, whether its first parameter is bound already)."""
        if isinstance(func, ast.Name):
            return self.functions.get(func.id), None, False
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner = cls if func.value.id == "self" else func.value.id
            fn = self.methods.get(owner or "", {}).get(func.attr)
            static = fn is not None and any(
                isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
            return fn, owner, not static
        return None, None, False


def bind(fn: Any, call: ast.Call, bound_first: bool, env: dict[str, Any]) -> dict[str, Any]:
    """The callee's parameters -> what the call passes (REQ for the request)."""
    params = [a.arg for a in fn.args.posonlyargs + fn.args.args][1 if bound_first else 0:]
    defaults = fn.args.defaults
    out: dict[str, Any] = {p: UNKNOWN for p in params}
    for p, d in zip(params[len(params) - len(defaults):], defaults):
        out[p] = const(d, {})
    for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults):
        out[a.arg] = const(d, {}) if d is not None else UNKNOWN

    def value(node: ast.expr) -> Any:
        return REQ if isinstance(node, ast.Name) and env.get(node.id) is REQ else const(node, env)
    for p, a in zip(params, call.args):
        out[p] = value(a)
    for kw in call.keywords:
        if kw.arg is not None:
            out[kw.arg] = value(kw.value)
    return out


def meet(a: set[str] | None, b: set[str] | None) -> set[str] | None:
    """What two joining paths both read (a path that never gets here counts
    for nothing)."""
    return b if a is None else a if b is None else a & b


class Walk:
    """One walk of a handler (and the helpers it hands the request to). Every
    field read is noted in ``reads``; a read is *required* when every path
    that answers (returns, or ends the handler) reads it: raising paths are
    failures and do not count."""

    def __init__(self, index: Index, reads: Reads, where: str) -> None:
        self.index, self.reads, self.where = index, reads, where
        self.stack: list[str] = []
        self.cls: str | None = None
        self.hits: set[str] = set()         # definite reads of the current statement
        self.returned: set[str] | None = None

    def function(self, fn: Any, cls: str | None, env: dict[str, Any]) -> set[str]:
        """Walk ``fn``; the fields every answering path through it reads."""
        if fn.name in self.stack or len(self.stack) > 8:
            return set()
        self.stack.append(fn.name)
        saved = self.cls, self.hits, self.returned
        self.cls, self.hits, self.returned = cls, set(), None
        end = self.block(fn.body, env, set())
        out = meet(end, self.returned) or set()
        self.cls, self.hits, self.returned = saved
        self.stack.pop()
        return out

    def block(self, stmts: list[ast.stmt], env: dict[str, Any],
              seen: set[str] | None) -> set[str] | None:
        for st in stmts:
            seen = self.stmt(st, env, seen)
        return seen

    def exprs(self, nodes: list[Any], env: dict[str, Any],
              seen: set[str] | None) -> set[str] | None:
        """Evaluate ``nodes`` on the path: their definite reads join ``seen``."""
        self.hits = set()
        for n in nodes:
            self.expr(n, env, False)
        return None if seen is None else seen | self.hits

    def stmt(self, st: ast.stmt, env: dict[str, Any], seen: set[str] | None) -> set[str] | None:
        if isinstance(st, ast.If):
            seen = self.exprs([st.test], env, seen)
            test = const(st.test, env)
            if test is not UNKNOWN:
                return self.block(st.body if test else st.orelse, env, seen)
            return meet(self.block(st.body, env, seen), self.block(st.orelse, env, seen))
        if isinstance(st, ast.Return):
            seen = self.exprs([st.value] if st.value else [], env, seen)
            self.returned = meet(self.returned, seen) if seen is not None else self.returned
            return None
        if isinstance(st, ast.Raise):
            self.exprs([st.exc] if st.exc else [], env, seen)
            return None
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):     # runs later, if ever
            params = {a.arg for a in st.args.posonlyargs + st.args.args + st.args.kwonlyargs}
            inner = {k: v for k, v in env.items() if k not in params}
            saved = self.returned
            self.block(st.body, inner, set())
            self.returned = saved
            return seen
        if isinstance(st, (ast.For, ast.AsyncFor)):
            return self.loop(st, env, seen)
        if isinstance(st, ast.Try):
            body = self.block(st.body, env, seen)
            for h in st.handlers:
                body = meet(body, self.block(h.body, env, seen))
            return self.block(st.finalbody, env, body)
        if isinstance(st, ast.While):
            seen = self.exprs([st.test], env, seen)
            self.block(st.body, env, seen)
            return seen
        if isinstance(st, (ast.With, ast.AsyncWith)):
            seen = self.exprs([i.context_expr for i in st.items], env, seen)
            return self.block(st.body, env, seen)
        return self.exprs([v for _n, v in ast.iter_fields(st) if isinstance(v, ast.AST)]
                          + [x for _n, v in ast.iter_fields(st) if isinstance(v, list)
                             for x in v if isinstance(x, ast.AST)], env, seen)

    def loop(self, st: Any, env: dict[str, Any], seen: set[str] | None) -> set[str] | None:
        items = const_items(st.iter, env)
        if items and isinstance(st.target, ast.Name):     # unrolled: it runs for each
            for item in items:
                seen = self.block(st.body, {**env, st.target.id: item}, seen)
            return seen
        seen = self.exprs([st.iter], env, seen)
        self.block(st.body, env, seen)          # may run no time at all
        self.block(st.orelse, env, seen)
        return seen

    def is_req(self, node: ast.AST, env: dict[str, Any]) -> bool:
        return isinstance(node, ast.Name) and env.get(node.id) is REQ

    def note(self, name: Any, definite: bool) -> None:
        self.reads.note(name, False, self.where)
        if definite and isinstance(name, str):
            self.hits.add(name)

    def expr(self, node: ast.AST, env: dict[str, Any], cond: bool) -> None:
        """Note the reads in ``node``; ``cond``: it may not be evaluated."""
        if isinstance(node, ast.Call):
            self.call(node, env, cond)
        elif isinstance(node, ast.IfExp):
            self.expr(node.test, env, cond)
            test = const(node.test, env)
            if test is UNKNOWN:
                self.expr(node.body, env, True)
                self.expr(node.orelse, env, True)
            else:
                self.expr(node.body if test else node.orelse, env, cond)
        elif isinstance(node, ast.BoolOp):
            self.expr(node.values[0], env, cond)
            for v in node.values[1:]:
                self.expr(v, env, True)
        elif isinstance(node, (ast.GeneratorExp, ast.ListComp, ast.SetComp)):
            self.comprehension(node, env, cond)
        elif (isinstance(node, ast.Compare) and len(node.ops) == 1
              and isinstance(node.ops[0], (ast.In, ast.NotIn))
              and self.is_req(node.comparators[0], env)):
            self.note(const(node.left, env), False)
        elif isinstance(node, ast.Subscript) and self.is_req(node.value, env):
            self.note(const(node.slice, env), not cond)
        elif self.is_req(node, env):
            self.reads.problems.append(f"{self.where}: line {getattr(node, 'lineno', '?')}: "
                                       "the request used whole: cannot follow its fields")
        elif isinstance(node, ast.Lambda):
            self.expr(node.body, env, True)
        else:
            for child in ast.iter_child_nodes(node):
                self.expr(child, env, cond)

    def comprehension(self, node: Any, env: dict[str, Any], cond: bool) -> None:
        gen = node.generators[0]
        items = const_items(gen.iter, env)
        if len(node.generators) == 1 and items and isinstance(gen.target, ast.Name):
            for item in items:
                self.expr(node.elt, {**env, gen.target.id: item}, cond)
            return
        self.expr(gen.iter, env, cond)
        for child in [node.elt] + gen.ifs + [g.iter for g in node.generators[1:]]:
            self.expr(child, env, True)

    def call(self, node: ast.Call, env: dict[str, Any], cond: bool) -> None:
        func, args = node.func, node.args
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name in READERS and args and self.is_req(args[0], env):
            self.note(const(args[1], env) if len(args) > 1 else None,
                      READERS[name] and not cond)
            rest: list[ast.AST] = args[2:] + [kw.value for kw in node.keywords]
        elif isinstance(func, ast.Attribute) and self.is_req(func.value, env):
            if func.attr != "get" or not args:
                self.reads.problems.append(f"{self.where}: req.{func.attr}(): cannot follow")
                return
            self.note(const(args[0], env), False)
            rest = args[1:]
        else:
            everything = args + [kw.value for kw in node.keywords]
            if any(self.is_req(a, env) for a in everything):
                self.follow(node, env, cond)
            rest = [func] + [a for a in everything if not self.is_req(a, env)]
        for child in rest:
            self.expr(child, env, cond)

    def follow(self, node: ast.Call, env: dict[str, Any], cond: bool) -> None:
        fn, cls, bound_first = self.index.resolve(node.func, self.cls)
        if fn is None:
            self.reads.problems.append(
                f"{self.where}: the request passed to {ast.unparse(node.func)}(): "
                "not a function of this module, cannot follow")
            return
        hits = self.hits
        inner = self.function(fn, cls, bind(fn, node, bound_first, env))
        self.hits = hits
        if not cond:
            self.hits |= inner


def handler_reads(source: str, qualname: str, where: str = "") -> Reads:
    """The request fields handler ``qualname`` (``"Handlers.lookup"``) of the
    module ``source`` reads, each marked required or not; its parameter
    ``req`` is the request."""
    index = Index(ast.parse(source))
    fn, cls = index.qualname(qualname)
    reads = Reads()
    where = where or qualname
    if fn is None:
        reads.problems.append(f"{where}: no such function")
        return reads
    if "req" not in [a.arg for a in fn.args.args + fn.args.posonlyargs]:
        reads.problems.append(f"{where}: no parameter 'req'")
        return reads
    required = Walk(index, reads, where).function(fn, cls, {"req": REQ})
    reads.fields = {name: name in required for name in reads.fields}
    return reads


def check_reads(rpc: str, reads: Reads, message: Any, unread_ok: set[str]) -> list[str]:
    """How a handler's reads differ from its message's request: fields read
    but not in it, fields it requires (or not) unlike the handler, fields
    never read (unless in ``unread_ok``)."""
    from gfsfs.common.protocol.shapes import fields
    spec = fields(message.request)
    req = message.request.__name__
    out = list(reads.problems)
    for name, required in sorted(reads.fields.items()):
        if name not in spec:
            out.append(f"{rpc}: the handler reads {name!r}, not a field of {req}")
        elif required and not spec[name][1]:
            out.append(f"{rpc}: {name!r} is NotRequired in {req}; the handler needs it")
        elif not required and spec[name][1]:
            out.append(f"{rpc}: {name!r} is required in {req}; the handler does without")
    out += [f"{rpc}: {name!r} of {req} is never read by the handler"
            for name in sorted(set(spec) - set(reads.fields) - unread_ok)]
    return out
