"""The chunkd's side of chunkd -> master: register, heartbeat, report_chunks.

:class:`ChunkReports` collects the changes (chunks added, removed, found
corrupt) since the last report. :class:`Heartbeat` registers with the master
(the full chunk list), then heartbeats every interval, sends the pending
reports, and deletes what the master's replies list. A heartbeat also asks the
master to extend the leases of the chunks this chunkd committed to as primary
since the previous one (``extend``; GFS §3.1). ``run_once`` does one
round and raises GFSError when the master cannot be reached; ``run_forever``
never gives up: it retries with the backoff of :func:`gfsfs.common.retry.heartbeat`
(capped exponential, with jitter).
"""
from __future__ import annotations

import logging
from typing import Any

import httpx
import trio

from gfsfs.common import retry
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import PROTOCOL_VERSION, check_version
from gfsfs.common.rpc import call

from chunkd.storage.store import MAX_HANDLE, ChunkStore

log = logging.getLogger(__name__)


class ChunkReports:
    """Chunk changes the master has not been told about yet."""

    def __init__(self) -> None:
        self.added: dict[int, int] = {}
        self.removed: set[int] = set()
        self.corrupt: set[int] = set()
        self.urgent = trio.Event()
        self.corrupt_found = 0      # checksum mismatches found, ever (for /metrics)
        # chunks this chunkd mutated as primary since the last heartbeat: the
        # heartbeat asks the master to extend their leases (GFS §3.1)
        self.primaried: set[int] = set()
        self.extended = 0           # lease extensions the master granted, ever

    def note_primary(self, handle: int) -> None:
        self.primaried.add(handle)

    def take_extend(self) -> list[int]:
        taken = sorted(self.primaried)
        self.primaried.clear()
        return taken

    def add(self, handle: int, version: int) -> None:
        self.added[handle] = version
        self.removed.discard(handle)

    def remove(self, handle: int) -> None:
        self.added.pop(handle, None)
        self.removed.add(handle)

    def mark_corrupt(self, handle: int) -> None:
        """A bad replica: told to the master at once (it re-replicates)."""
        self.added.pop(handle, None)
        self.corrupt.add(handle)
        self.corrupt_found += 1
        self.urgent.set()

    def pending(self) -> bool:
        return bool(self.added or self.removed or self.corrupt)

    def take(self) -> dict[str, Any]:
        taken = {"added": [[h, v] for h, v in sorted(self.added.items())],
                 "removed": sorted(self.removed), "corrupt": sorted(self.corrupt)}
        self.clear()
        return taken

    def put_back(self, taken: dict[str, Any]) -> None:
        """Undo ``take`` after a failed report, keeping newer changes."""
        for h, v in taken["added"]:
            if h not in self.removed and h not in self.corrupt:
                self.added.setdefault(h, v)
        for h in taken["removed"]:
            if h not in self.added:
                self.removed.add(h)
        self.corrupt.update(taken["corrupt"])

    def clear(self) -> None:
        self.added.clear()
        self.removed.clear()
        self.corrupt.clear()
        if self.urgent.is_set():
            self.urgent = trio.Event()


class Heartbeat:
    """Keeps the master informed about this chunkd and its chunks."""

    def __init__(self, *, server_id: str, addr: str, rack: str, store: ChunkStore,
                 http: httpx.AsyncClient, master_url: str, interval: float,
                 reports: ChunkReports) -> None:
        self.server_id = server_id
        self.addr = addr
        self.rack = rack
        self.store = store
        self.http = http
        self.master_url = master_url.rstrip("/")
        self.interval = interval
        self.reports = reports
        self.registered = False
        self.failures = 0

    async def run_once(self) -> None:
        """Register if needed, else heartbeat; then send pending reports."""
        if not self.registered:
            await self.register()
        else:
            body = await self._space(chunk_count=True)
            extend = self.reports.take_extend()
            if extend:
                body["extend"] = extend
            try:
                reply = await self._call("heartbeat", body)
            except BaseException:
                self.reports.primaried.update(extend)   # ask again next time
                raise
            if isinstance(reply, dict) and isinstance(reply.get("extended"), list):
                self.reports.extended += len(reply["extended"])
            await self._obey(reply)
            if isinstance(reply, dict) and reply.get("reregister"):
                log.info("master asks %s to register again", self.server_id)
                self.registered = False
                await self.register()
        if self.reports.pending():
            await self.report()

    async def register(self) -> None:
        self.reports.clear()            # the full list below supersedes them
        body = await self._space()
        body.update(addr=self.addr, rack=self.rack, protocol=PROTOCOL_VERSION,
                    chunks=[[h, v] for h, v in self.store.list()])
        reply = await self._call("register", body)
        if isinstance(reply, dict):
            check_version(reply.get("protocol"), f"master {self.master_url}", "this chunkd")
        self.registered = True
        if isinstance(reply, dict):
            interval = reply.get("heartbeat_interval")
            if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval > 0:
                self.interval = float(interval)
        log.info("registered %s (%s) with %s: %d chunks", self.server_id, self.addr,
                 self.master_url, len(body["chunks"]))
        await self._obey(reply)

    async def report(self) -> None:
        taken = self.reports.take()
        try:
            reply = await self._call("report_chunks", dict(taken))
        except BaseException:
            self.reports.put_back(taken)
            raise
        await self._obey(reply)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
                if self.failures:
                    log.info("master %s reachable again", self.master_url)
                self.failures = 0
            except GFSError as exc:
                self._failed(exc)
            except Exception:  # a bug here must not stop the chunkd serving
                log.exception("heartbeat round failed")
                self._failed(None)
            await self._pause()

    async def _pause(self) -> None:
        if self.failures:
            await trio.sleep(retry.heartbeat(self.interval).delay(self.failures - 1))
            return
        with trio.move_on_after(self.interval):
            await self.reports.urgent.wait()

    def _failed(self, exc: GFSError | None) -> None:
        self.failures += 1
        if exc is not None and exc.code not in (Code.UNAVAILABLE, Code.INTERNAL):
            self.registered = False     # e.g. the master forgot us: start over
        if exc is not None and exc.code == Code.PROTOCOL:
            # not a passing failure: say so every time (the master may be upgraded)
            log.error("chunkd %s and master %s speak different protocols: %s; "
                      "upgrade one of them (retrying)", self.server_id, self.master_url,
                      exc.message)
            return
        level = retry.heartbeat(self.interval).level(self.failures - 1)
        log.log(level, "master %s: %s (attempt %d)", self.master_url, exc, self.failures)

    async def _obey(self, reply: Any) -> None:
        """Delete the chunks a master reply lists under ``delete``."""
        handles = reply.get("delete") if isinstance(reply, dict) else None
        for h in handles or []:
            if isinstance(h, int) and not isinstance(h, bool) and 0 <= h < MAX_HANDLE:
                if await self.store.delete(h):
                    log.info("deleted chunk %016x at the master's request", h)

    async def _space(self, chunk_count: bool = False) -> dict[str, Any]:
        cap, used, free = await trio.to_thread.run_sync(self.store.space)
        body: dict[str, Any] = {"id": self.server_id, "capacity_bytes": cap,
                                "used_bytes": used, "free_bytes": free}
        if chunk_count:
            body["chunk_count"] = self.store.count()
        return body

    async def _call(self, name: str, body: dict[str, Any]) -> Any:
        if "id" not in body:
            body["id"] = self.server_id
        return await call(self.http, self.master_url, name, body, timeout=10.0)
