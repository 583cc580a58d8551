"""gfsfs/common/protocol/ (issue 11): one module per peer pair, every message
typed; the handlers and every call site checked against it (statically, by
protocol_reads.py and protocol_calls.py), and each check shown to catch a
wrong example."""
from __future__ import annotations

import ast
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import protocol_calls as pc
import protocol_reads as pr
from gfsfs.common.protocol import client_chunkd, client_master, master_master
from gfsfs.common.protocol.shapes import Message, Route, fields, problems

# documented fields a handler does not read, and why
UNREAD_OK = {
    # ctx rides on every namespace RPC; these need no permission (the doc says so)
    "getattr": {"ctx"}, "readlink": {"ctx"}, "listxattr": {"ctx"},
}


# ---------------------------------------------------------------- the package

def test_the_old_names_still_import() -> None:
    from gfsfs.common.protocol import (BLOCK_SIZE, CHAIN_HEADER, INLINE_MAX, MAX_NAME,
                                       MAX_SYMLINK, META_FORMAT, META_HEADER, META_MAGIC,
                                       PROTOCOL_VERSION, RENAME_EXCHANGE, RENAME_NOREPLACE,
                                       XATTR_CREATE, XATTR_REPLACE, check_version)
    assert (PROTOCOL_VERSION, CHAIN_HEADER, BLOCK_SIZE, INLINE_MAX) == (1, "x-gfs-chain",
                                                                        65536, 65536)
    assert (META_MAGIC, META_FORMAT, META_HEADER.size) == (b"GFSC", 1, 16)
    assert (MAX_NAME, MAX_SYMLINK, XATTR_CREATE, XATTR_REPLACE) == (255, 4095, 1, 2)
    assert (RENAME_NOREPLACE, RENAME_EXCHANGE) == (1, 2)
    check_version(None, "a peer", "us")
    with pytest.raises(Exception, match="speaks gfsfs protocol 2"):
        check_version(2, "a peer", "us")


@pytest.mark.parametrize("mod", pc.peers(), ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_each_peer_module_types_every_message(mod: Any) -> None:
    assert mod.__doc__ and len(mod.__doc__) > 200
    assert mod.SENDER in ("client", "chunkd", "master") and mod.SERVER in ("master", "chunkd")
    assert mod.__name__.endswith(f".{mod.SENDER}_{mod.SERVER}")
    for name, m in mod.MESSAGES.items():
        assert isinstance(m, Message) and m.name == name and m.doc
        for typ in (m.request, m.reply):
            assert typing.is_typeddict(typ), f"{name}: {typ!r} is not a TypedDict"
            fields(typ)                     # every annotation resolves
        assert f"{name} " in mod.__doc__ or f"{name}  " in mod.__doc__, \
            f"{name}: not in the module's prose"
    for r in mod.ROUTES:
        assert isinstance(r, Route) and r.prefix.startswith("/") and r.doc
        assert r.reply is None or typing.is_typeddict(r.reply)


def test_message_names_are_unique_so_a_name_is_one_pair() -> None:
    names = [n for mod in pc.peers() for n in mod.MESSAGES]
    assert len(names) == len(set(names)) > 40


def test_master_master_ships_the_op_log() -> None:
    assert set(master_master.MESSAGES) == {"shadow_ack", "step_down"}
    assert {r.key for r in master_master.ROUTES} == {"GET /ha/follow", "GET /ha/checkpoint"}


def test_the_forwards_are_client_chunkd_messages_and_routes() -> None:
    assert set(client_chunkd.FORWARDS) <= set(client_chunkd.MESSAGES)
    assert set(client_chunkd.FORWARD_ONLY) <= set(client_chunkd.FORWARDS)
    assert set(client_chunkd.FORWARD_ROUTES) <= {r.key for r in client_chunkd.ROUTES}


def test_the_protocol_imports_no_daemon_or_client_code() -> None:
    for path in (pc.ROOT / "gfsfs/common/protocol").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for m in mods:
                assert m.split(".")[0] not in ("master", "chunkd"), f"{path.name}: {m}"
                assert not m.startswith(("gfsfs.client", "gfsfs.fuse", "gfsfs.tools")), m


def test_problems_finds_what_does_not_conform() -> None:
    good = {"handle": 1, "version": 2, "offset": 0, "data": b"x", "secondaries": ["http://a"]}
    assert problems(good, client_chunkd.CommitReq) == []
    bad = {"handle": True, "offset": "0", "data": "x", "secondaries": [3], "extra": 1}
    found = problems(bad, client_chunkd.CommitReq)
    for want in ("handle: bool", "version' missing", "offset: str", "data: str",
                 "secondaries[0]: int", "unknown field 'extra'"):
        assert any(want in p for p in found), (want, found)
    entry = [[b"a", {"ino": 1}, 5]]
    assert any("'nlink' missing" in p for p in problems({"entries": entry},
                                                        client_master.ReaddirReply))
    assert problems({"primary": None, "x": 1}, client_master.FileChunk)   # missing + unknown
    assert problems(1.5, float) == [] and problems(2, float) == [] and problems(True, int)


# ---------------------------------------------------------------- (b) handlers

def served_handlers(tmp: Path) -> dict[str, dict[str, Callable[..., Any]]]:
    """server -> rpc -> handler, as the master's and a chunkd's apps register them."""
    from test_protocol import served_apps        # tests/http, on sys.path by conftest
    return {name: dict(app.rpcs) for name, app in served_apps(tmp).items()}


def handler_source(handler: Callable[..., Any]) -> tuple[Path, str]:
    """The file and qualname of the function that reads a handler's request:
    the method itself, or what a ``lambda req: f(..., req)`` hands it to."""
    fn = getattr(handler, "__func__", handler)
    if fn.__name__ == "<lambda>":
        targets = [fn.__globals__[n] for n in fn.__code__.co_names
                   if inspect.isfunction(fn.__globals__.get(n))]
        assert len(targets) == 1, f"{fn.__qualname__}: delegates to {targets}"
        fn = targets[0]
    return Path(inspect.getsourcefile(fn) or ""), fn.__qualname__


def handler_parts(handler: Callable[..., Any]) -> list[Callable[..., Any]]:
    """What reads a handler's request: the handler, or for a fenced master
    order (chunkd.api.server.Fenced) its fence and then the handler behind it;
    behind a gate that reads nothing (master.api.server.primary_only), the
    handler it wraps."""
    inner = getattr(handler, "__wrapped__", None)
    if inner is None:
        return [handler]
    fence = getattr(handler, "fence", None)
    return [*([fence] if fence is not None else []), *handler_parts(inner)]


def reads_of(handler: Callable[..., Any]) -> pr.Reads:
    """The fields every part of ``handler`` reads (required if one requires it)."""
    reads = pr.Reads()
    for part in handler_parts(handler):
        path, qualname = handler_source(part)
        one = pr.handler_reads(path.read_text(), qualname, f"{path.name}:{qualname}")
        reads.problems += one.problems
        for name, required in one.fields.items():
            reads.fields[name] = reads.fields.get(name, False) or required
    return reads


def test_handlers_read_exactly_the_documented_fields(tmp_path: Path) -> None:
    messages, found, checked = pc.all_messages(), [], 0
    for server, handlers in served_handlers(tmp_path).items():
        for rpc, handler in sorted(handlers.items()):
            reads = reads_of(handler)
            found += pr.check_reads(rpc, reads, messages[rpc], UNREAD_OK.get(rpc, set()))
            checked += bool(reads.fields)
    assert found == []
    assert checked >= 40            # every handler with fields was read


FAKE_HANDLERS = '''
def _name(req, name="name"):
    return need(req, name, bytes)

def _ctx(req):
    return opt(req, "ctx", dict)

class Handlers:
    async def lookup(self, req):
        if req.get("fast"):
            return {}
        return lookup(need(req, "parnet", int), _name(req), _ctx(req))

    async def rename(self, req):
        return go(need(req, "parent", int), _name(req), need(req, "new_parent", int),
                  _name(req, "new_name"), need(req, "flags", int), _ctx(req),
                  opt(req, "rid", int))

    async def getattr(self, req):
        if "ino" in req:
            return get(need(req, "ino", int))
        return dict(req)

    async def readlink(self, req):
        return other_module_reader(req)
'''


def test_the_handler_check_catches_wrong_handlers() -> None:
    def check(rpc: str) -> list[str]:
        reads = pr.handler_reads(FAKE_HANDLERS, f"Handlers.{rpc}")
        return pr.check_reads(rpc, reads, client_master.MESSAGES[rpc], set())
    lookup = check("lookup")
    assert "lookup: the handler reads 'parnet', not a field of NameReq" in lookup
    assert "lookup: the handler reads 'fast', not a field of NameReq" in lookup
    # read only after an early return on another path: not required
    assert "lookup: 'name' is required in NameReq; the handler does without" in lookup
    assert "lookup: 'parent' of NameReq is never read by the handler" in lookup
    assert check("rename") == ["rename: 'flags' is NotRequired in RenameReq; the handler needs it"]
    getattr_ = check("getattr")
    assert any("the request passed to dict(): not a function of this module" in p
               for p in getattr_)
    assert "getattr: 'ino' is required in InoReq; the handler does without" in getattr_
    assert any("cannot follow" in p for p in check("readlink"))
    lookup_ok = pr.handler_reads("class H:\n async def f(self, req):\n"
                                 "  return need(req, 'parent', int), need(req, 'name', bytes),"
                                 " opt(req, 'ctx', dict)\n", "H.f")
    assert pr.check_reads("lookup", lookup_ok, client_master.MESSAGES["lookup"], set()) == []


# ---------------------------------------------------------------- (c) call sites

def scan(sources: dict[str, str]) -> list[str]:
    trees = {rel: ast.parse(src) for rel, src in sources.items()}
    sites = pc.call_sites(trees, pc.find_stubs(trees))
    messages, allowed = pc.all_messages(), pc.sendable()
    out = [p for s in sites for p in pc.check_site(s, messages, allowed)]
    return out + [p for r in pc.route_paths(trees) for p in pc.check_route_path(*r)]


def test_every_call_site_names_a_message_of_its_pair_with_its_fields() -> None:
    sources = pc.sources()
    trees = {rel: ast.parse(src) for rel, src in sources.items()}
    sites = pc.call_sites(trees, pc.find_stubs(trees))
    seen = {(s.sender, s.rpc) for s in sites}
    # the scan found the stubs of every peer pair, not just some
    for want in [("client", "lookup"), ("client", "lease"), ("client", "commit"),
                 ("client", "append"), ("client", "fsck"), ("chunkd", "register"),
                 ("chunkd", "heartbeat"), ("chunkd", "apply"), ("chunkd", "truncate"),
                 ("master", "set_version"), ("master", "replicate"), ("master", "copy")]:
        assert want in seen, want
    assert len(sites) > 60
    assert scan(sources) == []


FAKE_PEERS = {
    "gfsfs/common/rpc.py": '''
async def call(http, base_url, name, body=None, timeout=None):
    return await http.post(f"{base_url}/rpc/{name}", content=pack(body or {}))
''',
    "gfsfs/client/fake.py": '''
from gfsfs.common import rpc
from gfsfs.common.rpc import call

class Client:
    async def call(self, name, body):
        return await rpc.call(self.http, self.master, name, body)

    async def _ns(self, rpc_name, ctx, /, **fields):
        fields["ctx"] = ctx
        return await self.call(rpc_name, fields)

    async def go(self, addr):
        await self._ns("lookup", None, parnet=1, name=b"x")
        await self.call("lookups", {})
        await call(self.http, addr, "apply", {"handle": 1})
        await self.call("getattr", {})
        body = {"ino": 1}
        body["idnex"] = 0
        await self.call("lease", body)
        await self.http.get(f"{addr}/chunks/{1}")
''',
    "gfsfs/common/group.py": '''
from gfsfs.common import rpc

class Group:
    async def call(self, name, body):
        return await rpc.call(self.http, self.primary, name, body)
''',
    "gfsfs/client/held.py": '''
from gfsfs.common.group import Group

class Client:
    def __init__(self, http):
        self.group = Group(http)

    async def call(self, name, body):
        return await self.group.call(name, body)

    async def go(self):
        await self.call("getattr", {"inoo": 1})
''',
    "chunkd/fake.py": '''
from gfsfs.common.rpc import call

async def tell(http, url):
    await call(http, url, "lookup", {"parent": 1, "name": b"a"})
    await call(http, url, "heartbeat", {"id": "c", "capacity_bytes": 1, "used_bytes": 0,
                                        "free_bytes": 1, "chunk_cuont": 0})
    await http.get(f"{url}/web/api/list")
''',
}


def test_the_call_site_check_catches_wrong_calls() -> None:
    found = scan(FAKE_PEERS)
    want = [
        "gfsfs/client/fake.py:14: lookup has no field 'parnet'",
        "gfsfs/client/fake.py:14: lookup without its field 'parent'",
        "gfsfs/client/fake.py:15: 'lookups' is no message of the protocol",
        "gfsfs/client/fake.py:16: a client sends 'apply', a message of another peer pair",
        "gfsfs/client/fake.py:16: apply without its field 'offset'",
        "gfsfs/client/fake.py:16: apply without its field 'version'",
        "gfsfs/client/fake.py:17: getattr without its field 'ino'",
        "gfsfs/client/fake.py:20: lease has no field 'idnex'",
        "gfsfs/client/fake.py:21: client builds a URL to '/chunks/', no route it may use",
        "gfsfs/client/held.py:12: getattr has no field 'inoo'",
        "gfsfs/client/held.py:12: getattr without its field 'ino'",
        "chunkd/fake.py:5: a chunkd sends 'lookup', a message of another peer pair",
        "chunkd/fake.py:6: heartbeat has no field 'chunk_cuont'",
        "chunkd/fake.py:8: chunkd builds a URL to '/web/api/list', no route it may use",
    ]
    assert sorted(found) == sorted(want)


def test_the_apply_a_primary_sends_is_an_apply() -> None:
    """``apply`` bodies come from ``Mutation.wire()``, not a dict display."""
    from chunkd.mutations.order import Mutation
    apply = client_chunkd.MESSAGES["apply"].request
    assert problems(Mutation(1, 2, 3, "ab" * 8, True).wire(), apply) == []
    assert problems(Mutation(1, 2, 3, "", False, b"x").wire(), apply) == []
    assert problems({**Mutation(1, 2, 3, "", False).wire(), "offest": 1}, apply)


def test_the_fuzzer_covers_every_rpc_with_documented_fields() -> None:
    """gfs-fuzz's tables of fields are stubs too; it leaves out only the
    RPCs that would touch what it did not create (a checkpoint, a dump of
    the whole namespace, the master's role: promote, step_down)."""
    from gfsfs.tools.fuzz import CHUNKD_RPCS, MASTER_RPCS
    by_server: dict[str, set[str]] = {"master": set(), "chunkd": set()}
    for mod in pc.peers():
        by_server[mod.SERVER] |= set(mod.MESSAGES)
    messages = pc.all_messages()
    skipped = {"master": {"checkpoint", "dump_metadata", "promote", "step_down"},
               "chunkd": set()}
    for server, table in (("master", MASTER_RPCS), ("chunkd", CHUNKD_RPCS)):
        assert set(table) == by_server[server] - skipped[server], server
        for rpc, spec in table.items():
            assert set(spec) <= set(fields(messages[rpc].request)), rpc
