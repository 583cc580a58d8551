"""Tiers 2 and 3: the master over in-process HTTP (ASGI), then as a real process."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
import sys
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import trio

from gfsfs.common.config import MasterConfig
from gfsfs.common.errors import GFSError
from gfsfs.common.rpc import pack, unpack
from master.chunks.registry import LivenessMonitor
from master.services.trash import TrashPurger
from master.core import Master
from master.state.namespace import ROOT_INO
from master.api.server import build_app

ROOT = Path(__file__).resolve().parents[2]
CS = 1 << 20
GB = 1 << 30


class FakeChunkds:
    """The master -> chunkd side: records calls, fails for chosen addrs."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.down: set[str] = set()
        self.full: set[str] = set()

    async def __call__(self, addr: str, name: str, body: dict[str, Any]) -> Any:
        self.calls.append((addr, name, body))
        if addr in self.down:
            raise GFSError("UNAVAILABLE", f"{addr} is down")
        if addr in self.full and body.get("data"):
            raise GFSError("ENOSPC", f"{addr} is full")
        return {}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Harness:
    def __init__(self, tmp: Path, **cfg: Any) -> None:
        self.chunkds = FakeChunkds()
        self.clock = Clock()
        self.cfg = MasterConfig(chunk_size=CS, data_dir=str(tmp), **cfg)
        self.master = Master.open(self.cfg, self.chunkds, clock=self.clock)
        self.app = build_app(self.master)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                      base_url="http://master")

    async def raw(self, path: str, content: bytes) -> tuple[int, Any]:
        r = await self.http.post(path, content=content)
        return r.status_code, unpack(r.content)

    async def call(self, rpc_name: str, /, **body: Any) -> Any:
        status, reply = await self.raw(f"/rpc/{rpc_name}", pack(body))
        if status >= 400:
            raise GFSError.from_wire(reply, status)
        return reply

    async def fails(self, code: str, rpc_name: str, /, **body: Any) -> None:
        with pytest.raises(GFSError) as e:
            await self.call(rpc_name, **body)
        assert e.value.code == code, e.value

    async def register(self, cid: str, rack: str = "r1", free: int = 10 * GB,
                       chunks: list[list[int]] | None = None) -> Any:
        return await self.call("register", id=cid, addr=f"http://{cid}", rack=rack,
                               capacity_bytes=100 * GB, used_bytes=100 * GB - free,
                               free_bytes=free, chunks=chunks or [])

    async def heartbeat(self, cid: str) -> Any:
        return await self.call("heartbeat", id=cid, capacity_bytes=100 * GB,
                               used_bytes=GB, free_bytes=99 * GB, chunk_count=0)

    async def aclose(self) -> None:
        await self.http.aclose()
        self.master.close()


def run(tmp: Path, fn: Any, **cfg: Any) -> None:
    async def main() -> None:
        h = Harness(tmp, **cfg)
        try:
            await fn(h)
        finally:
            await h.aclose()
    trio.run(main)


def test_bad_requests_and_still_serving(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        status, reply = await h.raw("/rpc/lookup", b"\xc1\xff not msgpack")
        assert status == 400 and reply["error"]["code"] == "BADREQ"
        status, reply = await h.raw("/rpc/lookup", pack([1, 2]))
        assert status == 400 and reply["error"]["code"] == "BADREQ"
        status, reply = await h.raw("/rpc/no_such_rpc", pack({}))
        assert status == 404 and reply["error"]["code"] == "NOROUTE"
        r = await h.http.get("/no/such/page")
        assert r.status_code == 404 and unpack(r.content)["error"]["code"] == "NOROUTE"
        await h.fails("BADREQ", "getattr", ino="one")
        await h.fails("BADREQ", "getattr", ino=True)
        await h.fails("BADREQ", "lookup", parent=1)
        await h.fails("BADREQ", "create", parent=1, name=5, mode=0o644, uid=0, gid=0)
        await h.fails("BADREQ", "register", id="x", addr="http://x", capacity_bytes=1,
                      used_bytes=0, free_bytes=1, chunks=[["a", 1]])
        await h.fails("BADREQ", "lookup", parent=1, name=b"x", ctx={"uid": "root"})
        await h.fails("EINVAL", "readdir", ino=1, offset=-1)
        await h.fails("ENOENT", "getattr", ino=999999)
        status, reply = await h.raw("/rpc/lookup", b"\x80" + b"x" * 5000)
        assert status == 413 and reply["error"]["code"] == "TOOBIG"
        attr = await h.call("getattr", ino=ROOT_INO)
        assert attr["ino"] == ROOT_INO and stat.S_ISDIR(attr["mode"])
    run(tmp_path, body, max_request_bytes=4096)


def test_namespace_over_http(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        d = await h.call("mkdir", parent=1, name=b"d", mode=0o755, uid=1000, gid=1000)
        f = await h.call("create", parent=d["ino"], name=b"f", mode=0o100640, uid=1000,
                         gid=1000)
        assert (await h.call("lookup", parent=d["ino"], name=b"f"))["ino"] == f["ino"]
        s = await h.call("symlink", parent=1, name=b"s", target=b"d/f", uid=0, gid=0)
        assert (await h.call("readlink", ino=s["ino"]))["target"] == b"d/f"
        ents = (await h.call("readdir", ino=1, offset=0))["entries"]
        assert [e[0] for e in ents] == [b"d", b"s"]
        assert (await h.call("readdir", ino=1, offset=ents[0][2]))["entries"][0][0] == b"s"
        await h.call("rename", parent=d["ino"], name=b"f", new_parent=1, new_name=b"g")
        await h.fails("ENOENT", "lookup", parent=d["ino"], name=b"f")
        g = await h.call("setattr", ino=f["ino"], size=5 * CS, mode=0o600)
        assert g["size"] == 5 * CS and g["mode"] == stat.S_IFREG | 0o600 and g["blocks"] == 0
        bob = {"uid": 1001, "gid": 1001, "gids": []}
        await h.fails("EACCES", "create", parent=d["ino"], name=b"x", mode=0o644, uid=1001,
                      gid=1001, ctx=bob)
        await h.fails("EPERM", "setattr", ino=f["ino"], mode=0o777, ctx=bob)
        await h.call("setxattr", ino=f["ino"], name=b"user.k", value=b"v")
        assert (await h.call("getxattr", ino=f["ino"], name=b"user.k"))["value"] == b"v"
        assert (await h.call("listxattr", ino=f["ino"]))["names"] == [b"user.k"]
        await h.call("removexattr", ino=f["ino"], name=b"user.k")
        await h.fails("ENODATA", "getxattr", ino=f["ino"], name=b"user.k")
        await h.call("unlink", parent=1, name=b"g")
        await h.call("rmdir", parent=1, name=b"d")
        st = await h.call("statfs")
        # root, the symlink, and f (last name gone) waiting in trash
        assert st["files"] == 3 and st["chunk_size"] == CS
        dump = await h.call("dump_metadata")
        assert [i["ino"] for i in dump["inodes"]] == [1, f["ino"], s["ino"]]
        r = await h.http.get("/status")
        assert unpack(r.content)["inodes"] == 3
    run(tmp_path, body)


def test_register_heartbeat_lease_flow(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        reply = await h.register("a", rack="r1", free=50 * GB)
        assert reply == {"heartbeat_interval": h.cfg.heartbeat_interval, "delete": [],
                         "protocol": 1, "epoch": 0, "primary": True}
        await h.register("b", rack="r1", free=40 * GB)
        await h.register("c", rack="r2", free=10 * GB)
        await h.register("full", rack="r3", free=0)
        st = await h.call("statfs")
        assert st["chunkds"] == 4 and st["free_bytes"] == 100 * GB
        f = await h.call("create", parent=1, name=b"f", mode=0o100644, uid=0, gid=0)
        ino = f["ino"]
        await h.call("setattr", ino=ino, mtime_ns=1)    # goal is 3 (replication_factor)
        lease = await h.call("lease", ino=ino, index=0)
        assert lease["version"] == 1
        # a and c first (one per rack, emptiest first), then b; never the full one
        created = {a for a, n, b in h.chunkds.calls if n == "set_version" and b["create"]}
        assert created == {"http://a", "http://b", "http://c"}
        assert lease["primary"]["id"] == "a"
        assert sorted(r["id"] for r in lease["secondaries"]) == ["b", "c"]
        # asking again while the lease holds: same primary, same version, no calls
        h.chunkds.calls.clear()
        again = await h.call("lease", ino=ino, index=0)
        assert again["version"] == 1 and again["primary"] == lease["primary"]
        assert h.chunkds.calls == []
        await h.call("extend", ino=ino, size=CS // 2, mtime_ns=5)
        chunks = await h.call("chunks", ino=ino, first=0, count=10)
        assert chunks["size"] == CS // 2 and len(chunks["chunks"]) == 1
        assert len(chunks["chunks"][0]["replicas"]) == 3
        assert (await h.call("getattr", ino=ino))["blocks"] == CS // 2 // 512
        # the lease lapses; a new grant bumps the version; b misses it and is dropped
        handle = lease["handle"]
        h.master.registry.leases[handle].expires_ns = 0
        h.chunkds.down.add("http://b")
        new = await h.call("lease", ino=ino, index=0)
        assert new["version"] == 2
        assert {(a, b["version"], b["create"]) for a, n, b in h.chunkds.calls} == {
            ("http://a", 2, False), ("http://b", 2, False), ("http://c", 2, False)}
        chunks = await h.call("chunks", ino=ino, first=0, count=1)
        assert sorted(r["id"] for r in chunks["chunks"][0]["replicas"]) == ["a", "c"]
        # b comes back with version 1 (stale) and an unknown chunk: delete both
        reply = await h.register("b", rack="r1", chunks=[[handle, 1], [4242, 1]])
        assert sorted(reply["delete"]) == sorted([handle, 4242])
        reply = await h.call("report_chunks", id="c", added=[[4243, 1]], removed=[],
                             corrupt=[])
        assert reply["delete"] == [4243]
        # unlink: the chunk is garbage, deleted through heartbeat replies
        await h.call("unlink", parent=1, name=b"f")
        assert (await h.heartbeat("a"))["delete"] == []      # in trash: chunks kept
        assert await TrashPurger(h.master).run_once(now_ns=time.time_ns() + 10**15) == 1
        assert (await h.heartbeat("a"))["delete"] == [handle]
        assert (await h.heartbeat("a"))["delete"] == []
        assert (await h.heartbeat("c"))["delete"] == [handle]
        assert (await h.heartbeat("b"))["delete"] == []
        # silence: a chunkd is dead after dead_after_heartbeats intervals
        h.clock.t += h.cfg.heartbeat_interval * (h.cfg.dead_after_heartbeats + 1)
        await h.heartbeat("a")
        dead = LivenessMonitor(h.master.registry).run_once()
        assert sorted(dead) == ["b", "c", "full"]
        assert (await h.heartbeat("c"))["reregister"] is True
        assert (await h.heartbeat("a"))["reregister"] is False
        assert (await h.call("statfs"))["chunkds"] == 1
        await h.fails("EFBIG", "lease", ino=ino, index=1 << 40)
    run(tmp_path, body)


def test_first_write_rides_on_chunk_creation(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        for cid in "abc":
            await h.register(cid)
        f = await h.call("create", parent=1, name=b"f", mode=0o100644, uid=0, gid=0)
        ino = f["ino"]
        h.chunkds.full = {"http://a", "http://b", "http://c"}
        await h.fails("ENOSPC", "lease", ino=ino, index=0, offset=0, data=b"x" * 10)
        assert (await h.call("chunks", ino=ino, first=0, count=1))["chunks"] == []
        h.chunkds.full = {"http://c"}           # c cannot hold the bytes: left out
        h.chunkds.calls.clear()
        reply = await h.call("lease", ino=ino, index=0, offset=5, data=b"x" * 10,
                             size=15, mtime_ns=7)
        assert reply["written"] is True and reply["attr"]["size"] == 15
        assert reply["attr"]["mtime_ns"] == 7
        assert {(a, b["offset"], b["data"]) for a, n, b in h.chunkds.calls} == {
            (f"http://{c}", 5, b"x" * 10) for c in "abc"}
        chunk = (await h.call("chunks", ino=ino, first=0, count=1))["chunks"][0]
        assert sorted(r["id"] for r in chunk["replicas"]) == ["a", "b"]
        # the chunk exists now: the bytes are ignored, a plain lease comes back
        h.chunkds.calls.clear()
        again = await h.call("lease", ino=ino, index=0, offset=0, data=b"y", size=99)
        assert "written" not in again and again["handle"] == reply["handle"]
        assert h.chunkds.calls == []
        assert (await h.call("getattr", ino=ino))["size"] == 15
        await h.fails("TOOBIG", "lease", ino=ino, index=1, offset=0, data=bytes(65537))
        await h.fails("BADREQ", "lease", ino=ino, index=1, offset=0, data="text")
        await h.fails("EINVAL", "lease", ino=ino, index=1, offset=-1, data=b"z")
        # the parent's attributes come back with creates and unlinks
        g = await h.call("create", parent=1, name=b"g", mode=0o100644, uid=0, gid=0)
        assert g["parent_attr"]["ino"] == 1
        assert (await h.call("unlink", parent=1, name=b"g"))["parent_attr"]["ino"] == 1
    run(tmp_path, body)


def test_lease_without_chunkds(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        f = await h.call("create", parent=1, name=b"f", mode=0o100644, uid=0, gid=0)
        await h.fails("UNAVAILABLE", "lease", ino=f["ino"], index=0)
        await h.register("a")
        h.chunkds.down.add("http://a")
        await h.fails("UNAVAILABLE", "lease", ino=f["ino"], index=0)
        # the failed allocation was rolled back
        assert (await h.call("chunks", ino=f["ino"], first=0, count=4))["chunks"] == []
        h.chunkds.down.clear()
        lease = await h.call("lease", ino=f["ino"], index=0)
        assert lease["secondaries"] == [] and lease["primary"]["id"] == "a"
    run(tmp_path, body)


# ---------------------------------------------------------------- real process

def start_master(data: Path, logs: Path) -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "master", "--host", "127.0.0.1", "--port", "0",
            "--data-dir", str(data), "--set", f"master.log_dir={str(logs)!r}"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("gfs-master listening on http://127.0.0.1:"), line
    return proc, line.split()[-1]


def rpc(url: str, rpc_name: str, /, **body: Any) -> Any:
    r = httpx.post(f"{url}/rpc/{rpc_name}", content=msgpack.packb(body, use_bin_type=True))
    assert r.status_code == 200, r.content
    return msgpack.unpackb(r.content, raw=False)


def test_real_process_kill9_keeps_acknowledged(tmp_path: Path) -> None:
    procs: list[subprocess.Popen[str]] = []
    try:
        proc, url = start_master(tmp_path / "data", tmp_path / "logs")
        procs.append(proc)
        d = rpc(url, "mkdir", parent=1, name=b"dir", mode=0o755, uid=0, gid=0)
        for i in range(50):
            rpc(url, "create", parent=d["ino"], name=b"file%d" % i, mode=0o100644,
                uid=0, gid=0)
        rpc(url, "checkpoint")
        for i in range(50, 80):
            rpc(url, "create", parent=d["ino"], name=b"file%d" % i, mode=0o100644,
                uid=0, gid=0)
        rpc(url, "setattr", ino=d["ino"], mode=0o700)
        proc.kill()
        proc.wait(10)
        proc, url = start_master(tmp_path / "data", tmp_path / "logs")
        procs.append(proc)
        d2 = rpc(url, "lookup", parent=1, name=b"dir")
        assert d2["ino"] == d["ino"] and d2["mode"] == stat.S_IFDIR | 0o700
        names = [e[0] for e in rpc(url, "readdir", ino=d["ino"], offset=0, limit=500)["entries"]]
        assert names == [b"file%d" % i for i in range(80)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()


def test_config_error_exits_2(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "master", "--set", "master.bogus=1"], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "bogus" in r.stderr


def test_register_and_statfs_check_the_protocol_version(tmp_path: Path) -> None:
    """A peer of another PROTOCOL_VERSION is refused, naming both versions;
    one that sends none (older than the field) counts as version 1."""
    from gfsfs.common.protocol import PROTOCOL_VERSION
    space = dict(capacity_bytes=GB, used_bytes=0, free_bytes=GB, chunks=[])

    async def body(h: Harness) -> None:
        with pytest.raises(GFSError) as e:
            await h.call("register", id="new", addr="http://new", protocol=999, **space)
        assert e.value.code == "PROTOCOL" and e.value.status == 400
        assert "chunkd new speaks gfsfs protocol 999" in e.value.message
        assert f"the master speaks protocol {PROTOCOL_VERSION}" in e.value.message
        assert (await h.call("statfs"))["chunkds"] == 0          # not registered
        await h.fails("PROTOCOL", "register", id="odd", addr="http://odd", protocol="2", **space)
        reply = await h.call("register", id="old", addr="http://old", **space)
        assert reply["protocol"] == PROTOCOL_VERSION
        await h.call("register", id="cur", addr="http://cur", protocol=PROTOCOL_VERSION, **space)
        assert (await h.call("statfs"))["chunkds"] == 2
        await h.fails("PROTOCOL", "statfs", protocol=999)
        st = await h.call("statfs", protocol=PROTOCOL_VERSION)
        assert st["protocol"] == PROTOCOL_VERSION
    run(tmp_path, body)


def test_a_retried_mutation_with_its_request_id_answers_as_the_first(tmp_path: Path) -> None:
    """A create, rename or unlink retried with the same ``rid`` (its reply
    was lost, or the primary changed) is applied once and answers as the
    first attempt did -- no EEXIST for one's own create; a new rid is a new
    operation; a shadow refuses mutations with NOTPRIMARY naming the primary."""
    async def body(h: Harness) -> None:
        first = await h.call("create", parent=1, name=b"f", mode=0o100644, uid=0, gid=0, rid=41)
        again = await h.call("create", parent=1, name=b"f", mode=0o100644, uid=0, gid=0, rid=41)
        assert again["ino"] == first["ino"]
        await h.fails("EEXIST", "create", parent=1, name=b"f", mode=0o100644, uid=0, gid=0,
                      rid=42)
        for _ in range(2):
            await h.call("rename", parent=1, name=b"f", new_parent=1, new_name=b"g", rid=43)
            await h.call("unlink", parent=1, name=b"g", rid=44)
        await h.fails("ENOENT", "unlink", parent=1, name=b"g", rid=45)
        await h.fails("BADREQ", "unlink", parent=1, name=b"g", rid=0)
        h.master.role.become_shadow("http://127.0.0.9:5000")
        with pytest.raises(GFSError) as e:
            await h.call("mkdir", parent=1, name=b"d", mode=0o755, uid=0, gid=0, rid=46)
        assert e.value.code == "NOTPRIMARY" and e.value.primary == "http://127.0.0.9:5000"
        assert (await h.call("getattr", ino=1))["ino"] == 1      # reads still served
        # NOTPRIMARY before anything else: not UNAVAILABLE for replicas a
        # shadow never heard of, not ENOENT from its copy of the namespace
        for rpc_name, body in (("lease", {"ino": first["ino"], "index": 0}),
                               ("append_lease", {"ino": first["ino"]}),
                               ("unlink", {"parent": 1, "name": b"nothere"}),
                               ("trash_purge", {})):
            await h.fails("NOTPRIMARY", rpc_name, **body)
    run(tmp_path, body)


def test_alone_refuse_refuses_mutations_without_a_synchronous_shadow(tmp_path: Path) -> None:
    """``[master] alone = "refuse"``: with no shadow in the synchronous set a
    mutation is refused before it is applied; a caught-up shadow lets
    mutations through (each waits for its acknowledgement); when its stream
    ends, mutations are refused again."""
    async def body(h: Harness) -> None:
        await h.fails("UNAVAILABLE", "mkdir", parent=1, name=b"a", mode=0o755, uid=0, gid=0)
        with pytest.raises(GFSError):
            h.master.ns.lookup(1, b"a")                 # nothing was applied
        shipper, url = h.master.shipper, "http://127.0.0.2:5000"
        shadow = shipper.open_stream(url, h.master.oplog.last_seq + 1,
                                     h.master.oplog.last_crc)
        await h.call("shadow_ack", shadow=url, seq=h.master.oplog.durable_seq)
        assert shadow.in_sync

        before = h.master.oplog.last_seq

        async def ack_soon() -> None:               # as the shadow would
            while h.master.oplog.last_seq == before:
                await trio.sleep(0.01)
            await trio.sleep(0.05)
            await h.call("shadow_ack", shadow=url, seq=h.master.oplog.last_seq)
        async with trio.open_nursery() as n:
            n.start_soon(ack_soon)
            with trio.fail_after(3):                # well before shadow_timeout (5 s)
                await h.call("mkdir", parent=1, name=b"b", mode=0o755, uid=0, gid=0)
        assert shipper.waits == 1 and shadow.in_sync
        shipper.close_stream(shadow)
        await h.fails("UNAVAILABLE", "mkdir", parent=1, name=b"c", mode=0o755, uid=0, gid=0)
    run(tmp_path, body, alone="refuse")


def test_a_chunk_handle_is_reserved_on_disk_before_any_chunkd_makes_it(tmp_path: Path) -> None:
    """A chunkd may create a chunk before its add_chunk record is durable; a
    crash then loses the record. The handle was reserved by a durable record
    first, so a master restarted from the log never hands it out again
    (before: the same number went to the next chunk while the orphan's
    deletion was on its way -- a file read back with other bytes)."""
    from master.state.logread import load
    from master.state.namespace import Namespace

    def durable_next_handle() -> int:
        ns = Namespace(CS)
        for entry in load(tmp_path).entries:
            ns.apply(entry.rec)
        return ns.next_handle

    async def body(h: Harness) -> None:
        for cid in ("a", "b", "c"):
            await h.register(cid)
        made: list[tuple[int, int]] = []
        inner = h.chunkds.__call__

        async def checking(addr: str, name: str, req: dict[str, Any]) -> Any:
            if name == "set_version" and req.get("create"):
                made.append((req["handle"], durable_next_handle()))
            return await inner(addr, name, req)
        h.chunkds.__call__ = checking            # type: ignore[method-assign]
        h.master.leases.caller = h.master.fenced(checking)
        for i in range(3):
            f = await h.call("create", parent=1, name=b"f%d" % i, mode=0o100644, uid=0, gid=0)
            await h.call("lease", ino=f["ino"], index=0)
        assert made and all(handle < ceiling for handle, ceiling in made), made
        # a restart hands out handles past everything reserved before it
        first = made[0][0]
        h.master.close()
        again = Master.open(h.cfg, h.chunkds, clock=h.clock)
        try:
            assert again.handle_next >= first + Master.HANDLE_BATCH
        finally:
            again.close()
        h.master = Master.open(h.cfg, h.chunkds, clock=h.clock)   # for aclose
    run(tmp_path, body)


def test_a_shadow_keeps_a_replica_reported_before_its_chunk_record(tmp_path: Path) -> None:
    """The chunkd's report of a new chunk can overtake the add_chunk record
    on its way to a shadow: the shadow keeps the location (a read-only mount
    of it found no replica before) and never asks for a deletion; the
    primary deletes a replica it knows no chunk of."""
    async def body(h: Harness) -> None:
        await h.register("a")
        h.master.role.become_shadow("http://127.0.0.9:5000")
        h.master.registry.following = True
        reply = await h.call("report_chunks", id="a", added=[[77, 1]])
        assert reply["delete"] == [] and reply["primary"] is False
        assert h.master.registry.locations[77] == {"a"}
        h.master.role.become_primary()
        h.master.registry.following = False
        reply = await h.call("report_chunks", id="a", added=[[78, 1]])
        assert reply["delete"] == [78] and 78 not in h.master.registry.locations
    run(tmp_path, body)
