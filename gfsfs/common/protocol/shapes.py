"""What every peer-pair module of :mod:`gfsfs.common.protocol` is made of.

- :class:`Message`: one ``POST /rpc/<name>``, its request and reply as
  ``TypedDict`` classes (a field that may be left out is ``NotRequired``);
  :func:`table` makes a module's ``MESSAGES`` from them.
- :class:`Route`: one raw route (chunk bytes, ``/status``, ``/metrics``, the web
  page), in a module's ``ROUTES``.
- The shapes several messages share: :class:`Attr`, :class:`Replica`,
  :class:`Ctx`, :data:`HandleVersion`, :class:`Empty`.
- :func:`fields` (the fields of a message type and whether each is required)
  and :func:`problems` (how a decoded message differs from its type), for the
  tests and for anyone debugging a peer.

Types are the wire's: ``bytes`` is msgpack *bin*, ``str`` msgpack *str*, a
``tuple[...]`` a msgpack array of that many items (decoded as a list), and a
``float`` field also takes an integer.
"""
from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict, Union


@dataclass(frozen=True)
class Message:
    """``POST /rpc/<name>``: a ``request`` map answered by a ``reply`` map."""
    name: str
    request: type
    reply: type
    doc: str


@dataclass(frozen=True)
class Route:
    """A raw route: ``method`` on every path starting with :attr:`prefix`.
    ``path`` as documented (``/chunk/<handle>?offset=&length=&version=``);
    ``reply``: the shape of a msgpack reply, None when the reply is not
    msgpack (chunk bytes, Prometheus text, HTML, JSON)."""
    method: str
    path: str
    doc: str
    reply: type | None = None

    @property
    def prefix(self) -> str:
        """The path up to its first ``<`` or ``?``: what the server matches."""
        return re.split(r"[<?]", self.path, maxsplit=1)[0]

    @property
    def key(self) -> str:
        """``"GET /chunk/"``: how :class:`gfsfs.common.rpc.App` registers it."""
        return f"{self.method} {self.prefix}"


def table(*messages: Message) -> dict[str, Message]:
    """A module's ``MESSAGES``: ``messages`` by name, each name once."""
    out: dict[str, Message] = {}
    for m in messages:
        if m.name in out:
            raise ValueError(f"message {m.name!r} twice")
        out[m.name] = m
    return out


# ---------------------------------------------------------------- shared shapes

class Empty(TypedDict):
    """``{}``: a request without fields, or a reply that only says "done"."""


class Attr(TypedDict):
    """An inode's attributes (``master.state.namespace.Namespace.attr``)."""
    ino: int
    mode: int               # st_mode, type bits included
    nlink: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    goal: int               # replication goal
    rdev: int
    blocks: int             # 512-byte blocks charged: sum of chunk bytes / 512
    nxattr: int             # xattrs the inode has; 0 lets a client answer getxattr itself


class Replica(TypedDict):
    """A chunkd holding a replica."""
    id: str                 # chunkd id
    addr: str               # "http://host:port"


class Ctx(TypedDict):
    """The caller of a namespace RPC (root when absent); permissions are checked
    against it."""
    uid: int
    gid: int
    gids: NotRequired[list[int]]    # supplementary groups


HandleVersion = tuple[int, int]     # [handle, version]


# ---------------------------------------------------------------- introspection

def fields(typ: type) -> dict[str, tuple[Any, bool]]:
    """``{field: (type, required)}`` of a TypedDict. (Python 3.11 misses
    ``NotRequired`` in ``__required_keys__`` under ``from __future__ import
    annotations``, so it is read from the resolved hints instead.)"""
    out: dict[str, tuple[Any, bool]] = {}
    total = getattr(typ, "__required_keys__", frozenset())
    for name, hint in typing.get_type_hints(typ, include_extras=True).items():
        if typing.get_origin(hint) is NotRequired:
            out[name] = (typing.get_args(hint)[0], False)
        else:
            out[name] = (hint, name in total)
    return out


def problems(value: Any, typ: Any, where: str = "") -> list[str]:
    """How ``value`` (a decoded msgpack message or part of one) differs from
    ``typ``; empty when it conforms. Unknown fields of a TypedDict count."""
    where = where or getattr(typ, "__name__", str(typ))
    if typ is Any:
        return []
    if typ is None or typ is type(None):
        return [] if value is None else [f"{where}: {value!r:.40} is not None"]
    if typing.is_typeddict(typ):
        return _typeddict_problems(value, typ, where)
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (Union, types.UnionType):
        found = [problems(value, a, where) for a in args]
        return [] if any(not p for p in found) else min(found, key=len)
    if origin is Literal:
        return [] if value in args else [f"{where}: {value!r:.40} is not one of {args}"]
    if origin in (list, tuple, dict):
        return _container_problems(value, origin, args, where)
    return _scalar_problems(value, typ, where)


def _typeddict_problems(value: Any, typ: type, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: {type(value).__name__}, not a map"]
    out = []
    spec = fields(typ)
    for name, (hint, required) in spec.items():
        if name in value:
            out += problems(value[name], hint, f"{where}.{name}")
        elif required:
            out.append(f"{where}: field {name!r} missing")
    out += [f"{where}: unknown field {k!r}" for k in value if k not in spec]
    return out


def _container_problems(value: Any, origin: Any, args: tuple[Any, ...],
                        where: str) -> list[str]:
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not a map"]
        kt, vt = args or (Any, Any)
        return [p for k, v in value.items()
                for p in problems(k, kt, f"{where} key") + problems(v, vt, f"{where}[{k!r}]")]
    if not isinstance(value, (list, tuple)):
        return [f"{where}: {type(value).__name__}, not an array"]
    if origin is list:
        item = args[0] if args else Any
        return [p for i, v in enumerate(value) for p in problems(v, item, f"{where}[{i}]")]
    if len(args) == 2 and args[1] is Ellipsis:
        return [p for i, v in enumerate(value) for p in problems(v, args[0], f"{where}[{i}]")]
    if len(value) != len(args):
        return [f"{where}: {len(value)} items, not {len(args)}"]
    return [p for i, (v, t) in enumerate(zip(value, args)) for p in problems(v, t, f"{where}[{i}]")]


def _scalar_problems(value: Any, typ: Any, where: str) -> list[str]:
    if typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(typ, type):
        ok = isinstance(value, typ)
    else:
        return [f"{where}: cannot check against {typ!r}"]
    return [] if ok else [f"{where}: {type(value).__name__} {value!r:.40}, not {typ.__name__}"]
