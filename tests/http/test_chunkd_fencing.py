"""A chunkd with several masters, in process: epoch fencing of the masters'
orders (a real ChunkServer on a disk store, rebuilt from its directory as a
restart would), and heartbeat loops to fake masters that say which of them is
the primary in which epoch (chunkd.services.fence, chunkd.services.heartbeat)."""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from chunkd.api.server import ChunkServer
from chunkd.services import fence as fencing
from chunkd.services.fence import Fence
from chunkd.services.heartbeat import Heartbeat
from chunkd.storage.diskstore import DiskChunkStore
from chunkd.storage.store import MemoryChunkStore
from gfsfs.common.config import ChunkServerConfig
from gfsfs.common.errors import GFSError
from gfsfs.common.rpc import App, pack, unpack
from test_chunkd_http import FakeMaster

ADDR = "http://cs1"
CFG = ChunkServerConfig(push_buffer_ttl=30.0)


# ---------------------------------------------------------------- orders

async def open_server(root: Path) -> ChunkServer:
    """A chunkd on its directory ``root``, as gfs-chunkd opens it."""
    store = DiskChunkStore(root, 0, 0)
    await store.open()
    return ChunkServer(store, CFG, None, "cs1", ADDR,  # type: ignore[arg-type]
                       fence=Fence.load(root / fencing.FILE))


async def order(server: ChunkServer, name: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app)) as http:
        resp = await http.post(f"{ADDR}/rpc/{name}", content=pack(body))
        return resp.status_code, unpack(resp.content)


def code(answer: tuple[int, Any]) -> tuple[int, str]:
    status, reply = answer
    return status, (reply.get("error") or {}).get("code", "")


def test_an_order_of_an_older_epoch_is_refused_stale_and_changes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        s = await open_server(tmp_path)
        assert s.fence.epoch == 0
        assert await order(s, "set_version", {"handle": 1, "version": 1, "create": True,
                                              "epoch": 5}) == (200, {})
        assert json.loads((tmp_path / "epoch").read_text()) == {"epoch": 5, "primary_url": ""}
        stale = [("set_version", {"handle": 1, "version": 2, "epoch": 4}),
                 ("set_versions", {"versions": [[1, 3]], "epoch": 4}),
                 ("delete", {"handles": [1], "epoch": 4}),
                 ("delete", {"handles": [1]}),                       # no epoch: 0
                 ("copy", {"handle": 1, "version": 1, "new_handle": 2, "new_version": 1,
                           "epoch": 1}),
                 ("replicate", {"handle": 3, "version": 1, "source": "http://cs2",
                                "epoch": 4})]
        for name, body in stale:
            assert code(await order(s, name, body)) == (409, "STALE"), name
        assert s.store.list() == [(1, 1)]           # nothing changed
        status = unpack(await status_of(s))
        assert (status["epoch"], status["stale_orders"]) == (5, len(stale))
        assert code(await order(s, "set_version", {"handle": 1, "version": 2,
                                                   "epoch": -1}))[1] == "BADREQ"
        assert code(await order(s, "delete", {"handles": [1], "epoch": True}))[1] == "BADREQ"
        assert await order(s, "set_version", {"handle": 1, "version": 2, "epoch": 5}) == (200, {})
        assert await order(s, "set_versions", {"versions": [[1, 3]], "epoch": 7}) == (
            200, {"failed": []})
        assert s.fence.epoch == 7

        again = await open_server(tmp_path)             # a restart
        assert (again.fence.epoch, again.store.list()) == (7, [(1, 3)])
        assert code(await order(again, "delete", {"handles": [1], "epoch": 6})) == (409, "STALE")
        assert await order(again, "delete", {"handles": [1], "epoch": 7}) == (200, {})
        assert again.store.list() == []
    trio.run(main)


async def status_of(server: ChunkServer) -> bytes:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app)) as http:
        return (await http.get(f"{ADDR}/status")).content


def test_a_newer_epoch_is_on_disk_before_the_order_acts(tmp_path: Path) -> None:
    """An order that raises the epoch but cannot write it is not carried out."""
    async def main() -> None:
        s = await open_server(tmp_path)
        (tmp_path / "epoch.tmp").mkdir()                # the temp file cannot be written
        status, reply = await order(s, "set_version", {"handle": 1, "version": 1,
                                                       "create": True, "epoch": 3})
        assert (status, reply["error"]["code"]) == (500, "EIO"), reply
        assert s.store.list() == [] and s.fence.epoch == 0
        (tmp_path / "epoch.tmp").rmdir()
        assert await order(s, "set_version", {"handle": 1, "version": 1, "create": True,
                                              "epoch": 3}) == (200, {})
        assert Fence.load(tmp_path / "epoch").epoch == 3
    trio.run(main)


def test_an_unreadable_epoch_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "epoch").write_text("{not json")
    try:
        Fence.load(tmp_path / "epoch")
    except ValueError as exc:               # ConfigError: gfs-chunkd exits 2 naming it
        assert "epoch" in str(exc)
    else:
        raise AssertionError("loaded a damaged epoch file")


# ---------------------------------------------------------------- heartbeats

class Masters:
    """One chunkd (memory store) and fake masters by URL, each with its loop."""

    def __init__(self, urls: list[str], apps: dict[str, App] | None = None) -> None:
        self.fakes = {url: FakeMaster() for url in urls}
        mounts = {url: httpx.ASGITransport(app=f.app) for url, f in self.fakes.items()}
        mounts.update({url: httpx.ASGITransport(app=app) for url, app in (apps or {}).items()})
        self.server = ChunkServer(MemoryChunkStore(), CFG, None, "cs1", ADDR)  # type: ignore[arg-type]
        mounts[ADDR] = httpx.ASGITransport(app=self.server.app)
        self.http = httpx.AsyncClient(mounts=mounts, timeout=5.0)
        self.server.http = self.http
        self.server.masters = [
            Heartbeat(server_id="cs1", addr=ADDR, rack="r", store=self.server.store,
                      http=self.http, master_url=url, interval=0.2, reports=self.server.reports,
                      fence=self.server.fence) for url in [*urls, *(apps or {})]]

    def loop(self, url: str) -> Heartbeat:
        return next(h for h in self.server.masters if h.master_url == url)

    async def rpc(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        resp = await self.http.post(f"{ADDR}/rpc/{name}", content=pack(body))
        return resp.status_code, unpack(resp.content)


def run(test: Callable[[Masters], Awaitable[None]], urls: list[str],
        apps: dict[str, App] | None = None) -> None:
    async def main() -> None:
        m = Masters(urls, apps)
        async with m.http:
            await test(m)
    trio.run(main)


A, S, OLD = "http://a", "http://s", "http://old"


def test_only_the_primary_of_the_highest_epoch_is_obeyed() -> None:
    async def go(m: Masters) -> None:
        a, s, old = m.fakes[A], m.fakes[S], m.fakes[OLD]
        a.epoch = s.epoch = 2
        old.epoch, s.primary = 1, False
        for h in (1, 2, 3, 4):
            await m.server.store.create(h, 1)
        await m.loop(A).run_once()                      # registers: epoch 2, primary a
        assert (m.server.fence.epoch, m.server.fence.primary_url) == (2, A)
        s.delete, old.delete = [1], [2]
        await m.loop(S).run_once()                      # a shadow's list: ignored
        await m.loop(OLD).run_once()                    # a superseded primary's: ignored
        assert [h for h, _v in m.server.store.list()] == [1, 2, 3, 4]
        assert [(lp.role, lp.epoch) for lp in m.server.masters] == [
            ("primary", 2), ("shadow", 2), ("stale", 1)]
        a.delete, a.extended = [3], [3]
        m.server.reports.note_primary(3)
        await m.loop(A).run_once()                      # the primary's: obeyed
        assert [h for h, _v in m.server.store.list()] == [1, 2, 4]
        assert m.server.reports.extended == 1 and a.calls[-1][1]["extend"] == [3]
        await m.loop(OLD).run_once()                    # tells the old one what is newer
        hb = old.calls[-1][1]
        assert (hb["epoch"], hb["primary_url"]) == (2, A)
        old.reregister = s.reregister = True            # honoured from anyone, for itself
        await m.loop(S).run_once()
        await m.loop(OLD).run_once()
        assert s.calls[-1][0] == old.calls[-1][0] == "register"
        assert a.calls[-1][0] == "heartbeat"

        s.epoch, s.primary, s.delete = 3, True, [4]     # the shadow was promoted
        await m.loop(S).run_once()
        assert (m.server.fence.epoch, m.server.fence.primary_url) == (3, S)
        assert [h for h, _v in m.server.store.list()] == [1, 2]
        a.delete = [1]
        await m.loop(A).run_once()
        assert m.loop(A).role == "stale" and [h for h, _v in m.server.store.list()] == [1, 2]
        assert (a.calls[-1][1]["epoch"], a.calls[-1][1]["primary_url"]) == (3, S)
        assert await m.rpc("set_version", {"handle": 2, "version": 2, "epoch": 2}) == (
            409, {"error": {"code": "STALE", "message": "set_version from master epoch 2; "
                            "this chunkd has seen epoch 3 (primary http://s)"}})
    run(go, [A, S, OLD])


def test_every_master_gets_every_report_even_one_that_was_down() -> None:
    async def go(m: Masters) -> None:
        a, s = m.fakes[A], m.fakes[S]
        s.primary = False
        for lp in m.server.masters:
            await lp.run_once()                          # both registered
        down = m.loop(S)
        down.master_url = "http://127.0.0.1:1"          # s goes away for a while
        await m.rpc("set_version", {"handle": 5, "version": 1, "create": True})
        await m.loop(A).run_once()
        assert a.calls[-1] == ("report_chunks", {"id": "cs1", "added": [[5, 1]], "removed": [],
                                                 "corrupt": []})
        try:
            await down.run_once()
        except GFSError:
            pass
        else:
            raise AssertionError("a dead master answered")
        assert down.pending.added == {5: 1}            # kept for it
        down.master_url = S
        await m.rpc("set_version", {"handle": 6, "version": 1, "create": True})
        await down.run_once()                          # back: what it missed, and the rest
        assert s.calls[-1] == ("report_chunks", {"id": "cs1", "added": [[5, 1], [6, 1]],
                                                 "removed": [], "corrupt": []})
        s.reregister = True                            # a restarted master: the full list
        await down.run_once()
        assert s.calls[-1][0] == "register" and s.calls[-1][1]["chunks"] == [[5, 1], [6, 1]]
    run(go, [A, S])


def hanging_master() -> App:
    """A master that takes every request and never answers."""
    app = App("master")

    async def hang(req: dict[str, Any]) -> dict[str, Any]:
        await trio.sleep_forever()
        return {}
    for name in ("register", "heartbeat", "report_chunks"):
        app.rpc(name, hang)
    return app


def test_a_dead_or_hanging_master_slows_no_other() -> None:
    dead = "http://127.0.0.1:1"

    async def go(m: Masters) -> None:
        m.server.masters.append(Heartbeat(
            server_id="cs1", addr=ADDR, rack="r", store=m.server.store, http=m.http,
            master_url=dead, interval=0.2, reports=m.server.reports, fence=m.server.fence))
        async with trio.open_nursery() as nursery:
            for lp in m.server.masters:
                nursery.start_soon(lp.run_forever)
            await trio.sleep(2.0)
            nursery.cancel_scope.cancel()
        names = [n for n, _ in m.fakes[A].calls]
        assert names[0] == "register" and names.count("heartbeat") >= 4, names
        hang, gone = m.loop("http://hang"), m.loop(dead)
        assert not hang.registered and gone.failures >= 1 and not gone.registered
        status = unpack(await status_of(m.server))
        by_url = {st["url"]: st for st in status["masters"]}
        assert by_url[A]["reachable"] and by_url[A]["role"] == "primary"
        assert by_url[A]["last_heartbeat"] > 0 and not by_url[dead]["reachable"]
        assert by_url[dead]["last_heartbeat"] == 0 and by_url[dead]["role"] == "unknown"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=m.server.app)) as http:
            text = (await http.get(f"{ADDR}/metrics")).text
        assert f'gfs_chunkd_master_up{{master="{A}"}} 1.0' in text
        assert f'gfs_chunkd_master_up{{master="{dead}"}} 0.0' in text
        assert f'gfs_chunkd_master_primary{{master="{A}"}} 1.0' in text
        assert "gfs_chunkd_epoch 0.0" in text and "gfs_chunkd_stale_orders_total 0.0" in text
    run(go, [A], {"http://hang": hanging_master()})
