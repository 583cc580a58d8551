"""gfsfs/common/protocol/: the version exchange at mount time; that the RPCs and
routes the master and chunkd serve are the ones its peer-pair modules type; and
that what they answer, and what the daemons send each other, has those types."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gfsfs.fuse import mount
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import (PROTOCOL_VERSION, chunkd_master, client_chunkd, client_master,
                                   master_chunkd, master_master)
from gfsfs.common.protocol.shapes import Message, problems
from gfsfs.common.rpc import App, RpcHandler, serve_forever, unpack


class ServedApp:
    """``app`` on a loopback port, served from a thread of its own (mount.main
    runs trio itself)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.port = 0
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token, self._stop = trio.lowlevel.current_trio_token(), trio.Event()
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(serve_forever, self.app, "127.0.0.1", 0, self._stop)
            self._ready.set()

    def __enter__(self) -> str:
        self._thread.start()
        assert self._ready.wait(10)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None and self._stop is not None
        self._token.run_sync_soon(self._stop.set)
        self._thread.join(10)


def fake_master(statfs: Any) -> App:
    app = App("master")
    app.rpc("statfs", statfs)
    return app


@pytest.fixture
def root_logging() -> Iterator[None]:
    """mount.main sets up the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


def mount_main(url: str, tmp: Path) -> int:
    (tmp / "mnt").mkdir(exist_ok=True)
    return mount.main([url, str(tmp / "mnt"), "-f", "--set", f"client.log_dir={tmp}",
                       "--set", "client.retries=1"])


@pytest.mark.parametrize("side", ["master refuses", "client refuses"])
def test_mount_refuses_another_protocol_clearly(side: str, tmp_path: Path, root_logging: None,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []

    async def statfs(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req.get("protocol"))
        if side == "master refuses":
            raise GFSError(Code.PROTOCOL, f"the client speaks gfsfs protocol "
                                          f"{req.get('protocol')}; the master speaks protocol 7")
        return {"chunk_size": 1 << 20, "chunkds": 0, "protocol": 999}

    with ServedApp(fake_master(statfs)) as url:
        assert mount_main(url, tmp_path) == 1
    assert seen == [PROTOCOL_VERSION]
    logged = "".join(p.read_text() for p in tmp_path.glob("client_*.log"))
    want = ("protocol 7" if side == "master refuses"
            else f"master {url} speaks gfsfs protocol 999; this client speaks protocol 1")
    for text in (logged, capsys.readouterr().err):
        assert "ERROR gfsfs.mount" in text and "cannot mount" in text and want in text


def test_mount_accepts_a_master_that_sends_no_version(tmp_path: Path) -> None:
    """An older master (no ``protocol`` in its statfs reply) is version 1."""
    from gfsfs.common.config import ClientConfig

    async def statfs(req: dict[str, Any]) -> dict[str, Any]:
        return {"chunk_size": 1 << 20, "chunkds": 3}

    with ServedApp(fake_master(statfs)) as url:
        cfg = ClientConfig(master_url=url, log_dir=str(tmp_path))
        info, spec = trio.run(mount.check_master, cfg)
    assert info["chunkds"] == 3 and spec == url


# ---------------------------------------------------------------- served = documented

PEERS = (client_master, chunkd_master, master_chunkd, client_chunkd, master_master)


def documented() -> dict[str, tuple[set[str], set[str]]]:
    """Per server ("master", "chunkd"): the RPC names of the MESSAGES tables
    of the peer-pair modules addressed to it, and the keys (``"GET /chunk/"``)
    of their ROUTES."""
    out: dict[str, tuple[set[str], set[str]]] = {"master": (set(), set()),
                                                 "chunkd": (set(), set())}
    for mod in PEERS:
        rpcs, routes = out[mod.SERVER]
        rpcs.update(mod.MESSAGES)
        routes.update(r.key for r in mod.ROUTES)
    return out


def served_apps(tmp: Path) -> dict[str, Any]:
    """The master's app and a chunkd's, built in-process (the master's data in
    ``tmp``): ``{"master": App, "chunkd": App}``."""
    from chunkd.api.server import ChunkServer
    from chunkd.storage.store import MemoryChunkStore
    from gfsfs.common.config import ChunkServerConfig, MasterConfig
    from master.core import Master
    from master.api.server import build_app

    async def no_chunkds(addr: str, name: str, body: dict[str, Any]) -> Any:
        return {}
    m = Master.open(MasterConfig(data_dir=str(tmp)), no_chunkds)
    try:
        master_app = build_app(m)
    finally:
        m.close()
    chunkd_app = ChunkServer(MemoryChunkStore(), ChunkServerConfig(), None,  # type: ignore[arg-type]
                             "cs1", "http://cs1").app
    return {"master": master_app, "chunkd": chunkd_app}


def served(tmp: Path) -> dict[str, tuple[set[str], set[str]]]:
    """The RPC names and raw routes the master and a chunkd register."""
    return {name: (set(app.rpcs), {f"{meth} {prefix}" for meth, prefix, *_ in app.routes})
            for name, app in served_apps(tmp).items()}


def differences(docs: dict[str, tuple[set[str], set[str]]],
                live: dict[str, tuple[set[str], set[str]]]) -> list[str]:
    out = []
    for server in ("master", "chunkd"):
        for kind, doc, got in (("rpc", docs[server][0], live[server][0]),
                               ("route", docs[server][1], live[server][1])):
            out += [f"{server}: {kind} {x} served, not documented" for x in sorted(got - doc)]
            out += [f"{server}: {kind} {x} documented, not served" for x in sorted(doc - got)]
    return out


def test_the_rpcs_served_are_the_rpcs_documented(tmp_path: Path) -> None:
    docs, live = documented(), served(tmp_path)
    assert differences(docs, live) == []
    assert "GET /chunk/" in docs["chunkd"][1] and "lookup" in docs["master"][0]
    assert len(docs["master"][0]) == 43 and len(docs["chunkd"][0]) == 10


def test_the_comparison_sees_a_difference(tmp_path: Path) -> None:
    live = served(tmp_path)
    docs = {k: (set(rpcs), set(routes)) for k, (rpcs, routes) in live.items()}
    docs["master"][0].discard("lookup")
    docs["chunkd"][0].add("scrub")
    docs["chunkd"][1].discard("PUT /data/")
    assert differences(docs, live) == ["master: rpc lookup served, not documented",
                                       "chunkd: rpc scrub documented, not served",
                                       "chunkd: route PUT /data/ served, not documented"]


# ---------------------------------------------------------------- the types on the wire

class Checked:
    """Wraps an app's RPC handlers: every request it gets and every reply it
    gives is checked against its message (``seen``: the RPCs that ran)."""

    def __init__(self, app: App, messages: dict[str, Message], found: list[str]) -> None:
        self.found, self.seen = found, set()
        for name, handler in list(app.rpcs.items()):
            app.rpc(name, self.wrap(app.name, messages[name], handler))

    def wrap(self, who: str, msg: Message, handler: RpcHandler) -> RpcHandler:
        async def checked(req: dict[str, Any]) -> dict[str, Any]:
            self.found += problems(req, msg.request, f"{who} got {msg.name}")
            reply = await handler(req)
            self.found += problems(reply, msg.reply, f"{who} answered {msg.name}")
            self.seen.add(msg.name)
            return reply
        return checked


def messages_to(server: str) -> dict[str, Message]:
    return {n: m for mod in PEERS if mod.SERVER == server for n, m in mod.MESSAGES.items()}


class FakeChunkds:
    """The chunkds of an in-process master: check what it sends them and
    answer as a chunkd would."""

    def __init__(self, found: list[str]) -> None:
        self.found, self.seen = found, set()

    async def __call__(self, addr: str, name: str, body: dict[str, Any]) -> Any:
        msg = master_chunkd.MESSAGES[name]
        self.found += problems(body, msg.request, f"master sent {name}")
        self.seen.add(name)
        if name == "set_versions":
            return {"failed": []}
        if name == "copy":
            return {"handle": body["new_handle"], "version": body["new_version"], "length": 5}
        return {}


class Peer:
    """POST /rpc/NAME to an ASGI app, failing the test on an error reply."""

    def __init__(self, app: App) -> None:
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                      base_url="http://peer")

    async def __call__(self, rpc_name: str, /, **body: Any) -> Any:
        from gfsfs.common.rpc import pack
        r = await self.http.post(f"/rpc/{rpc_name}", content=pack(body))
        reply = unpack(r.content)
        assert r.status_code == 200, (rpc_name, reply)
        return reply

    async def status(self) -> Any:
        return unpack((await self.http.get("/status")).content)


async def namespace_calls(call: Peer) -> tuple[int, int]:
    """Every namespace RPC once; (the directory, the file) it made."""
    await call("statfs", protocol=PROTOCOL_VERSION)
    d = (await call("mkdir", parent=1, name=b"d", mode=0o40755, uid=0, gid=0))["ino"]
    f = (await call("create", parent=d, name=b"f", mode=0o100644, uid=0, gid=0,
                    ctx={"uid": 0, "gid": 0, "gids": []}))["ino"]
    await call("lookup", parent=d, name=b"f")
    await call("getattr", ino=f)
    await call("setattr", ino=f, mode=0o100600, mtime_ns=5)
    await call("symlink", parent=d, name=b"s", target=b"f", uid=0, gid=0)
    await call("readlink", ino=(await call("lookup", parent=d, name=b"s"))["ino"])
    await call("link", ino=f, parent=d, name=b"h")
    await call("rename", parent=d, name=b"h", new_parent=d, new_name=b"h2")
    await call("unlink", parent=d, name=b"h2")
    await call("setxattr", ino=f, name=b"user.a", value=b"1")
    await call("getxattr", ino=f, name=b"user.a")
    await call("listxattr", ino=f)
    await call("removexattr", ino=f, name=b"user.a")
    await call("readdir", ino=d, offset=0)
    await call("mkdir", parent=d, name=b"e", mode=0o40755, uid=0, gid=0)
    await call("rmdir", parent=d, name=b"e")
    return d, f


async def data_and_admin_calls(call: Peer, d: int, f: int) -> None:
    """Every data path, chunkd -> master and admin RPC once."""
    space = {"capacity_bytes": 1 << 40, "used_bytes": 0, "free_bytes": 1 << 40}
    for i in (1, 2, 3):
        await call("register", id=f"cs{i}", addr=f"http://cs{i}", rack="r", chunks=[],
                   protocol=PROTOCOL_VERSION, **space)
    await call("lease", ino=f, index=0, offset=0, data=b"hello", sync=True, size=5,
               mtime_ns=7)
    lease = await call("lease", ino=f, index=0, avoid=["cs9"])
    await call("heartbeat", id="cs1", chunk_count=1, extend=[lease["handle"]], **space)
    await call("report_chunks", id="cs1", added=[[lease["handle"], lease["version"]]],
               removed=[], corrupt=[])
    await call("chunks", ino=f, first=0, count=4)
    await call("append_lease", ino=f)
    await call("extend", ino=f, size=10, mtime_ns=8)
    for name in ("cluster_status", "fsck", "checkpoint", "dump_metadata", "trash_list"):
        await call(name)
    await call("fileinfo", ino=f)
    await call("drain", id="cs3", status=True)
    await call("setgoal", ino=d, goal=2, recursive=True)
    await call("quota_set", ino=d, bytes=1 << 40, inodes=1000, soft_bytes=1 << 30,
               soft_inodes=100, grace=60.0)
    await call("quota_list")
    await call("quota_list", ino=f)
    await call("statfs", ino=d)
    await call("snapshot", src=d, parent=1, name=b"snap")
    await call("lease", ino=f, index=0)         # copy-on-write of the shared chunk
    await call("unlink", parent=d, name=b"f")
    await call("trash_list")
    await call("trash_restore", ino=f)
    await call("unlink", parent=d, name=b"f")
    await call("trash_purge", inos=[f], older_than=0)
    await call("quota_rm", ino=d)


async def ha_calls(call: Any, m: Any) -> None:
    """The HA RPCs (the follow stream itself is tested with real processes):
    a shadow acknowledges, this master is made a shadow and promoted, and
    is told to step down."""
    await call("ha_status")
    m.shipper.open_stream("http://127.0.0.2:5000", 1, None)
    await call("shadow_ack", shadow="http://127.0.0.2:5000", seq=m.oplog.durable_seq)
    m.role.become_shadow("http://127.0.0.3:5000")
    await call("promote", epoch=3)
    await call("step_down", epoch=4, primary="http://127.0.0.3:5000")


def test_what_the_master_answers_and_sends_has_its_types(tmp_path: Path) -> None:
    from gfsfs.common.config import MasterConfig
    from master.api.server import build_app
    from master.core import Master
    found: list[str] = []
    chunkds = FakeChunkds(found)
    m = Master.open(MasterConfig(data_dir=str(tmp_path), chunk_size=1 << 20), chunkds)
    try:
        app = build_app(m)
        checked = Checked(app, messages_to("master"), found)

        async def main() -> Any:
            call = Peer(app)
            d, f = await namespace_calls(call)
            await data_and_admin_calls(call, d, f)
            await call("session_open", path="/")     # no secret: {"open": True, "root": 1}
            await ha_calls(call, m)
            return await call.status()
        status = trio.run(main)
    finally:
        m.close()
    found += problems(status, client_master.ROUTES[0].reply, "GET /status")
    assert found == []
    assert checked.seen == set(messages_to("master"))       # every RPC ran
    assert chunkds.seen >= {"set_version", "set_versions", "copy"}


async def chunkd_calls(http: httpx.AsyncClient) -> list[Any]:
    """Every chunkd RPC and route once, at cs1 (cs2: its secondary, relay and
    re-replication source); the /status replies."""
    from gfsfs.common.rpc import call as rpc_call

    async def call(addr: str, rpc_name: str, /, **body: Any) -> Any:
        return await rpc_call(http, addr, rpc_name, body)
    cs1, cs2, both = "http://cs1", "http://cs2", ("http://cs1", "http://cs2")
    for addr in both:
        await call(addr, "set_version", handle=1, version=1, create=True)
    await call(cs2, "set_version", handle=3, version=1, create=True, offset=0, data=b"r",
               sync=True)
    push = await http.put(f"{cs1}/data/{'ab' * 8}", content=b"pushed",
                          headers={"x-gfs-chain": cs2})
    assert push.status_code == 200 and unpack(push.content) == {"length": 6}
    await call(cs1, "commit", handle=1, version=1, offset=0, data_id="ab" * 8,
               secondaries=[cs2], sync=True)
    await call(cs1, "commit", handle=1, version=1, offset=6, data=b"inline", secondaries=[cs2])
    await call(cs1, "append", handle=1, version=1, chunk_size=1 << 20, data=b"rec",
               secondaries=[cs2])
    full = await call(cs1, "append", handle=1, version=1, chunk_size=1 << 16,
                      min_offset=1 << 16, data=b"x", secondaries=[cs2])
    assert full["retry"] == "next_chunk"
    await call(cs1, "truncate", handle=1, version=1, length=12, secondaries=[cs2])
    await call(cs1, "sync", handles=[1])
    await call(cs1, "sync", handles=[1], relay=cs2)
    read = await http.get(f"{cs1}/chunk/1", params={"offset": 0, "length": 6, "version": 1})
    assert read.content == b"pushed"
    for addr in both:
        await call(addr, "set_versions", versions=[[1, 2]])
    await call(cs1, "copy", handle=1, version=2, new_handle=2, new_version=2)
    await call(cs1, "replicate", handle=3, version=1, source=cs2)
    await call(cs1, "delete", handles=[2])
    return [unpack((await http.get(f"{addr}/status")).content) for addr in both]


async def heartbeat_calls(cs: Any, http: httpx.AsyncClient) -> None:
    """A chunkd's register, heartbeat and report to the master."""
    from chunkd.services.heartbeat import Heartbeat
    hb = Heartbeat(server_id=cs.server_id, addr=cs.addr, rack="r", store=cs.store, http=http,
                   master_url="http://master", interval=1.0, reports=cs.reports)
    await hb.run_once()                     # register
    cs.reports.note_primary(1)
    cs.reports.add(9, 1)
    await hb.run_once()                     # heartbeat (extend), report_chunks
    assert hb.registered


def test_what_chunkds_answer_and_send_has_its_types(tmp_path: Path) -> None:
    from chunkd.api.server import ChunkServer
    from chunkd.storage.store import MemoryChunkStore
    from gfsfs.common.config import ChunkServerConfig, MasterConfig
    from master.api.server import build_app
    from master.core import Master
    found: list[str] = []
    m = Master.open(MasterConfig(data_dir=str(tmp_path)), FakeChunkds(found))
    try:
        master_app = build_app(m)
        on_master = Checked(master_app, messages_to("master"), found)
        servers = [ChunkServer(MemoryChunkStore(), ChunkServerConfig(), None,  # type: ignore[arg-type]
                               f"cs{i}", f"http://cs{i}") for i in (1, 2)]
        checked = [Checked(s.app, messages_to("chunkd"), found) for s in servers]
        mounts = {s.addr: httpx.ASGITransport(app=s.app) for s in servers}

        async def main() -> list[Any]:
            http = httpx.AsyncClient(mounts={**mounts, "http://master": httpx.ASGITransport(
                app=master_app)})
            for s in servers:
                s.http = http
            statuses = await chunkd_calls(http)
            await heartbeat_calls(servers[0], http)
            return statuses
        statuses = trio.run(main)
    finally:
        m.close()
    found += [p for st in statuses for p in problems(st, client_chunkd.ROUTES[2].reply, "status")]
    assert found == []
    assert checked[0].seen == set(messages_to("chunkd")) - {"apply"}
    assert checked[1].seen >= {"apply", "truncate", "sync"}         # the forwards
    assert on_master.seen == {"register", "heartbeat", "report_chunks"}
