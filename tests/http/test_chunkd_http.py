"""chunkd over HTTP, in process: three ChunkServers on memory stores, wired
together through httpx.ASGITransport (no sockets), plus a fake master."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgpack
import pytest
import trio

from chunkd.services.heartbeat import ChunkReports, Heartbeat
from chunkd.api.server import ChunkServer
from chunkd.storage.store import BLOCK_SIZE, MemoryChunkStore
from gfsfs.common.config import ChunkServerConfig
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import PROTOCOL_VERSION
from gfsfs.common.rpc import App, pack, unpack

ADDRS = ["http://cs1", "http://cs2", "http://cs3"]
DEAD = "http://127.0.0.1:1"       # nothing listens there: connection refused


class Cluster:
    """Three chunkds; ``master``: an app at http://master, or apps by URL."""

    def __init__(self, master: App | dict[str, App] | None = None) -> None:
        cfg = ChunkServerConfig(push_buffer_ttl=30.0)
        self.servers = [ChunkServer(MemoryChunkStore(), cfg, None, f"cs{i + 1}", addr)  # type: ignore[arg-type]
                        for i, addr in enumerate(ADDRS)]
        mounts: dict[str, httpx.AsyncBaseTransport] = {
            addr: httpx.ASGITransport(app=s.app) for addr, s in zip(ADDRS, self.servers)}
        masters = {"http://master": master} if isinstance(master, App) else master or {}
        for url, app in masters.items():
            mounts[url] = httpx.ASGITransport(app=app)
        self.http = httpx.AsyncClient(mounts=mounts, timeout=5.0)
        for s in self.servers:
            s.http = self.http

    async def rpc(self, addr: str, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        resp = await self.http.post(f"{addr}/rpc/{name}", content=pack(body))
        return resp.status_code, unpack(resp.content)

    async def create(self, handle: int, version: int) -> None:
        for addr in ADDRS:
            assert await self.rpc(addr, "set_version",
                                  {"handle": handle, "version": version, "create": True}) == (200, {})

    async def push(self, data_id: str, data: bytes, chain: list[str] = ADDRS) -> tuple[int, Any]:
        resp = await self.http.put(f"{chain[0]}/data/{data_id}", content=data,
                                   headers={"x-gfs-chain": ",".join(chain[1:])})
        return resp.status_code, unpack(resp.content)

    async def read(self, addr: str, handle: int, offset: int, length: int,
                   version: int = 0) -> httpx.Response:
        return await self.http.get(f"{addr}/chunk/{handle}",
                                   params={"offset": offset, "length": length, "version": version})


def run(test: Callable[[Cluster], Awaitable[None]],
        master: App | dict[str, App] | None = None) -> None:
    async def main() -> None:
        cluster = Cluster(master)
        async with cluster.http:
            await test(cluster)
    trio.run(main)


def error(reply: Any) -> str:
    return str(reply["error"]["code"])


def test_push_commit_read_on_every_replica() -> None:
    data = bytes(range(256)) * 1000 + b"tail"     # crosses several 64 KiB blocks

    async def go(c: Cluster) -> None:
        await c.create(42, 1)
        assert await c.push("ab12", data) == (200, {"length": len(data)})
        status, reply = await c.rpc(ADDRS[0], "commit", {
            "handle": 42, "version": 1, "offset": 100, "data_id": "ab12",
            "secondaries": ADDRS[1:], "sync": True})
        assert (status, reply) == (200, {"length": len(data)})
        for addr in ADDRS:
            resp = await c.read(addr, 42, 0, 10 << 20, version=1)
            assert resp.status_code == 200
            assert resp.content == bytes(100) + data
            part = await c.read(addr, 42, 100 + BLOCK_SIZE - 3, 10)
            assert part.content == data[BLOCK_SIZE - 3:BLOCK_SIZE + 7]
        # truncate through the primary reaches every replica
        assert await c.rpc(ADDRS[0], "truncate", {"handle": 42, "version": 1, "length": 50,
                                                 "secondaries": ADDRS[1:]}) == (200, {})
        for s in c.servers:
            assert s.store.length(42) == 50
    run(go)


def test_errors_are_typed_and_the_server_keeps_answering() -> None:
    async def go(c: Cluster) -> None:
        a = ADDRS[0]
        resp = await c.http.post(f"{a}/rpc/commit", content=b"\xc1not msgpack")
        assert resp.status_code == 400 and error(unpack(resp.content)) == "BADREQ"
        resp = await c.http.get(f"{a}/nowhere")
        assert resp.status_code == 404 and error(unpack(resp.content)) == "NOROUTE"
        status, reply = await c.rpc(a, "set_version", {"handle": "7", "version": 1})
        assert status == 400 and error(reply) == "BADREQ" and "handle" in reply["error"]["message"]
        status, reply = await c.rpc(a, "set_version", {"handle": -1, "version": 1})
        assert status == 400 and error(reply) == "BADREQ"
        resp = await c.read(a, 99, 0, 10)
        assert resp.status_code == 404 and error(unpack(resp.content)) == "NOCHUNK"
        resp = await c.http.get(f"{a}/chunk/..%2Fetc%2Fpasswd", params={"length": 1})
        assert resp.status_code == 400
        resp = await c.http.put(f"{a}/data/not-hex!", content=b"x")
        assert resp.status_code == 400
        await c.create(5, 3)
        status, reply = await c.rpc(a, "commit", {"handle": 5, "version": 3, "offset": 0,
                                                  "data_id": "ffff", "secondaries": []})
        assert status == 503 and error(reply) == "EAGAIN"
        await c.push("0a", b"hello", [a])
        status, reply = await c.rpc(a, "commit", {"handle": 5, "version": 2, "offset": 0,
                                                  "data_id": "0a", "secondaries": []})
        assert status == 409 and error(reply) == "STALE"
        resp = await c.read(a, 5, 0, 10, version=4)
        assert resp.status_code == 409 and error(unpack(resp.content)) == "STALE"
        resp = await c.http.get(f"{a}/status")
        status_body = msgpack.unpackb(resp.content)
        assert resp.status_code == 200 and status_body["id"] == "cs1" and status_body["chunks"] == 1
    run(go)


def test_failed_secondary_and_broken_chain_are_named() -> None:
    async def go(c: Cluster) -> None:
        await c.create(8, 1)
        status, reply = await c.push("beef", b"x" * 1000, [ADDRS[0], ADDRS[1], DEAD])
        assert status == 503 and error(reply) == "UNAVAILABLE"
        assert DEAD in reply["error"]["message"]
        status, reply = await c.rpc(ADDRS[0], "commit", {
            "handle": 8, "version": 1, "offset": 0, "data_id": "beef",
            "secondaries": [ADDRS[1], DEAD]})
        assert status == 503 and error(reply) == "UNAVAILABLE"
        assert DEAD in reply["error"]["message"] and ADDRS[1] not in reply["error"]["message"]
        # the primary and the live secondary applied it
        for addr in ADDRS[:2]:
            assert (await c.read(addr, 8, 0, 2000)).content == b"x" * 1000
    run(go)


def test_corrupt_replica_is_refused_reported_and_dropped() -> None:
    async def go(c: Cluster) -> None:
        pending = c.servers[2].reports.subscribe()      # what a master would be told
        await c.create(9, 1)
        await c.push("01", b"y" * 3 * BLOCK_SIZE, [ADDRS[2]])
        await c.rpc(ADDRS[2], "commit", {"handle": 9, "version": 1, "offset": 0,
                                         "data_id": "01", "secondaries": []})
        store = c.servers[2].store
        assert isinstance(store, MemoryChunkStore)
        store.data[9][BLOCK_SIZE + 5] ^= 1
        assert (await c.read(ADDRS[2], 9, 0, 100)).status_code == 200   # block 0 is fine
        resp = await c.read(ADDRS[2], 9, 0, 3 * BLOCK_SIZE)
        assert resp.status_code == 500 and error(unpack(resp.content)) == "CORRUPT"
        assert pending.corrupt == {9} and c.servers[2].reports.corrupt_found == 1
        assert store.version(9) is None
        assert (await c.read(ADDRS[2], 9, 0, 1)).status_code == 404
    run(go)


class FakeMaster:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.delete: list[int] = []
        self.reregister = False
        self.protocol: int | None = None      # what register answers (None: no field)
        self.epoch, self.primary = 0, True    # every reply says who answered
        self.extended: list[int] = []         # what the next heartbeat says it extended
        self.app = App("master")
        for name in ("register", "heartbeat", "report_chunks"):
            self.app.rpc(name, self._handler(name))

    def _handler(self, name: str) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        async def handle(req: dict[str, Any]) -> dict[str, Any]:
            self.calls.append((name, req))
            reply: dict[str, Any] = {"delete": self.delete, "epoch": self.epoch,
                                     "primary": self.primary}
            self.delete = []
            if name == "register":
                reply["heartbeat_interval"] = 0.25
                if self.protocol is not None:
                    reply["protocol"] = self.protocol
            if name == "heartbeat":
                reply["reregister"], self.reregister = self.reregister, False
                reply["extended"], self.extended = self.extended, []
            return reply
        return handle


def test_heartbeat_registers_reports_and_obeys_deletes() -> None:
    master = FakeMaster()

    async def go(c: Cluster) -> None:
        s = c.servers[0]
        hb = Heartbeat(server_id="cs1", addr=ADDRS[0], rack="r1", store=s.store, http=c.http,
                       master_url="http://master", interval=2.0, reports=s.reports)
        await s.store.create(1, 4)
        await hb.run_once()
        name, req = master.calls[-1]
        assert name == "register" and req["chunks"] == [[1, 4]] and req["rack"] == "r1"
        assert req["protocol"] == PROTOCOL_VERSION
        assert hb.interval == 0.25
        await c.rpc(ADDRS[0], "set_version", {"handle": 2, "version": 1, "create": True})
        master.delete = [1]
        await hb.run_once()
        assert [n for n, _ in master.calls] == ["register", "heartbeat", "report_chunks"]
        assert master.calls[-1][1]["added"] == [[2, 1]]
        assert s.store.list() == [(2, 1)]
        master.reregister = True
        await hb.run_once()
        assert master.calls[-1][0] == "register" and master.calls[-1][1]["chunks"] == [[2, 1]]
    run(go, master.app)


def test_heartbeat_survives_a_dead_master() -> None:
    async def go(c: Cluster) -> None:
        s = c.servers[0]
        hb = Heartbeat(server_id="cs1", addr=ADDRS[0], rack="r1", store=s.store, http=c.http,
                       master_url=DEAD, interval=0.1, reports=ChunkReports())
        with trio.move_on_after(1.5):
            await hb.run_forever()
        assert hb.failures >= 1 and not hb.registered
        assert (await c.http.get(f"{ADDRS[0]}/status")).status_code == 200
    run(go)


def test_heartbeat_sends_its_protocol_and_logs_a_mismatch_clearly(
        caplog: pytest.LogCaptureFixture) -> None:
    """The chunkd registers with its PROTOCOL_VERSION; a master answering
    another one (or refusing ours) is an ERROR naming both, every retry."""
    master = FakeMaster()
    master.protocol = 999

    async def go(c: Cluster) -> None:
        s = c.servers[0]
        hb = Heartbeat(server_id="cs1", addr=ADDRS[0], rack="r1", store=s.store, http=c.http,
                       master_url="http://master", interval=0.1, reports=s.reports)
        with pytest.raises(GFSError) as e:
            await hb.run_once()
        assert e.value.code is Code.PROTOCOL and not hb.registered
        assert master.calls[-1][1]["protocol"] == PROTOCOL_VERSION
        assert "master http://master speaks gfsfs protocol 999" in e.value.message
        assert f"this chunkd speaks protocol {PROTOCOL_VERSION}" in e.value.message
        with caplog.at_level(logging.ERROR, "chunkd.services.heartbeat"):
            with trio.move_on_after(2.5):
                await hb.run_forever()
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) >= 2 and not hb.registered
        assert "chunkd cs1 and master http://master speak different protocols" in errors[0]
        assert "protocol 999" in errors[0]
    run(go, master.app)


def test_a_retried_record_append_lands_once() -> None:
    """issue 12: the primary applied a record but a secondary was out of
    reach; the writer's retry (same record_id) gets the first offset back,
    the secondary that missed it gets it there, and nothing is appended twice.
    Another record id, or the same id with other bytes, is a new record."""
    body = {"handle": 7, "version": 1, "chunk_size": 1 << 20, "data": b"rec-A",
            "record_id": 99}

    async def go(c: Cluster) -> None:
        await c.create(7, 1)
        first = await c.rpc(ADDRS[0], "append", {**body, "secondaries": [ADDRS[1], DEAD]})
        assert first[0] == 503 and error(first[1]) == "UNAVAILABLE"
        again = await c.rpc(ADDRS[0], "append", {**body, "secondaries": ADDRS[1:]})
        assert again == (200, {"offset": 0, "length": 5})
        assert c.servers[0].mutations.records.repeats == 1
        for addr in ADDRS:              # the same bytes at the same offset everywhere
            assert (await c.read(addr, 7, 0, 100)).content == b"rec-A"
        other = await c.rpc(ADDRS[0], "append", {**body, "record_id": 100,
                                                 "secondaries": ADDRS[1:]})
        assert other == (200, {"offset": 5, "length": 5})
        changed = await c.rpc(ADDRS[0], "append", {**body, "data": b"rec-B",
                                                   "secondaries": ADDRS[1:]})
        assert changed == (200, {"offset": 10, "length": 5})
        for addr in ADDRS:
            assert (await c.read(addr, 7, 0, 100)).content == b"rec-Arec-Arec-B"
        # a secondary of the first attempt that becomes primary knows it too
        moved = await c.rpc(ADDRS[1], "append", {**body, "record_id": 100,
                                                 "secondaries": [ADDRS[0], ADDRS[2]]})
        assert moved == (200, {"offset": 5, "length": 5})
        # forgotten when the chunk is cut below it
        assert (await c.rpc(ADDRS[0], "truncate", {"handle": 7, "version": 1, "length": 5,
                                                   "secondaries": ADDRS[1:]}))[0] == 200
        later = await c.rpc(ADDRS[0], "append", {**body, "record_id": 100,
                                                 "secondaries": ADDRS[1:]})
        assert later == (200, {"offset": 5, "length": 5})
        assert c.servers[0].mutations.records.repeats == 1
    run(go)


def test_a_remembered_record_overwritten_since_is_appended_anew() -> None:
    """A record applied on one replica in a failed attempt, then overwritten
    there by another primary's record at the same offset (that primary never
    had it): the retry at the first replica must not answer the old offset
    and write its bytes over the other record -- it is appended anew."""
    rec = {"handle": 8, "version": 1, "chunk_size": 1 << 20, "data": b"record-R",
           "record_id": 1}

    async def go(c: Cluster) -> None:
        await c.create(8, 1)
        first = await c.rpc(ADDRS[0], "append", {**rec, "secondaries": [DEAD]})
        assert first[0] == 503                  # R at 0 on cs1 only
        other = await c.rpc(ADDRS[1], "append", {
            **rec, "data": b"record-S", "record_id": 2, "secondaries": [ADDRS[0], ADDRS[2]]})
        assert other == (200, {"offset": 0, "length": 8})     # S at 0 everywhere
        retry = await c.rpc(ADDRS[0], "append", {**rec, "secondaries": ADDRS[1:]})
        assert retry == (200, {"offset": 8, "length": 8})
        for addr in ADDRS:
            assert (await c.read(addr, 8, 0, 100)).content == b"record-Srecord-R", addr
    run(go)
