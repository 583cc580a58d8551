"""The chunkd's side of chunkd -> master: register, heartbeat, report_chunks.

A chunkd talks to every master of ``[chunk_server] master_url`` (comma
separated): one :class:`Heartbeat` loop per master, each independent (a dead
master slows no other; each retries with the backoff of
:func:`gfsfs.common.retry.heartbeat`, capped exponential with jitter).

:class:`ChunkReports` fans the changes (chunks added, removed, found corrupt,
chunks mutated as primary) out to each loop's own :class:`PendingReports`.
A loop registers with its master (the full chunk list), then heartbeats every
interval and sends its pending reports. A heartbeat also asks the master to
extend the leases of the chunks this chunkd committed to as primary since the
previous one (``extend``; GFS §3.1) and carries the highest epoch seen.

Which replies are acted upon (:mod:`chunkd.services.fence`): ``delete`` and
``extended`` only from a master answering ``primary`` with an epoch no older
than the highest seen; a shadow's or a superseded primary's are ignored.
``reregister`` is honoured from any master, for that master's loop only: it
asks for the full chunk list, which goes to that master alone and changes
nothing on this chunkd (a shadow that restarted needs it to learn where the
replicas are).

``run_once`` does one round and raises GFSError when the master cannot be
reached; ``run_forever`` never gives up.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import trio

from gfsfs.common import retry
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import PROTOCOL_VERSION, check_version
from gfsfs.common.rpc import call

from chunkd.services.fence import Fence
from chunkd.storage.store import MAX_HANDLE, ChunkStore

log = logging.getLogger(__name__)


class PendingReports:
    """The chunk changes one master has not been told about yet."""

    def __init__(self) -> None:
        self.added: dict[int, int] = {}
        self.removed: set[int] = set()
        self.corrupt: set[int] = set()
        self.urgent = trio.Event()
        # chunks this chunkd mutated as primary since the last heartbeat: the
        # heartbeat asks the master to extend their leases (GFS §3.1)
        self.primaried: set[int] = set()

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


class ChunkReports:
    """Chunk changes, told to every master: each :class:`Heartbeat` loop
    subscribes its own :class:`PendingReports`, so a master that was down
    loses nothing (it gets the full list when it registers again) and a
    slow one holds up no other. Also the counters /metrics shows."""

    def __init__(self) -> None:
        self.masters: list[PendingReports] = []
        self.corrupt_found = 0      # checksum mismatches found, ever (for /metrics)
        self.extended = 0           # lease extensions a primary granted, ever

    def subscribe(self) -> PendingReports:
        """A new master's queue: it sees every change from now on."""
        pending = PendingReports()
        self.masters.append(pending)
        return pending

    def note_primary(self, handle: int) -> None:
        for p in self.masters:
            p.note_primary(handle)

    def add(self, handle: int, version: int) -> None:
        for p in self.masters:
            p.add(handle, version)

    def remove(self, handle: int) -> None:
        for p in self.masters:
            p.remove(handle)

    def mark_corrupt(self, handle: int) -> None:
        self.corrupt_found += 1
        for p in self.masters:
            p.mark_corrupt(handle)


class Heartbeat:
    """Keeps one master informed about this chunkd and its chunks (one
    instance, one loop, per master of ``[chunk_server] master_url``)."""

    def __init__(self, *, server_id: str, addr: str, rack: str, store: ChunkStore,
                 http: httpx.AsyncClient, master_url: str, interval: float,
                 reports: ChunkReports, fence: Fence | None = None) -> None:
        self.server_id = server_id
        self.addr = addr
        self.rack = rack
        self.store = store
        self.http = http
        self.master_url = master_url.rstrip("/")
        self.interval = interval
        self.reports = reports
        self.pending = reports.subscribe()
        self.fence = fence if fence is not None else Fence()
        self.registered = False
        self.failures = 0
        self.role = ""              # what its last reply said: primary, shadow, stale, unknown
        self.epoch = 0              # the master's epoch, from its last reply
        self.last_heartbeat = 0.0   # time.time() of its last answered round (0: never)

    def state(self) -> dict[str, Any]:
        """This master as the chunkd sees it (``GET /status``, /metrics)."""
        return {"url": self.master_url, "reachable": self.failures == 0 and self.registered,
                "role": self.role or "unknown", "primary": self.role == "primary", "epoch": self.epoch,
                "last_heartbeat": self.last_heartbeat, "failures": self.failures}

    async def run_once(self) -> None:
        """Register if needed, else heartbeat; then send pending reports."""
        if not self.registered:
            await self.register()
        else:
            await self.heartbeat()
        if self.pending.pending():
            await self.report()

    async def heartbeat(self) -> None:
        """One heartbeat: lease extensions asked, deletes obeyed (from the
        primary only), and a new registration if the master asks for one."""
        body = await self._space(chunk_count=True)
        body.update(self.fence.wire())
        extend = self.pending.take_extend()
        if extend:
            body["extend"] = extend
        try:
            reply = await self._call("heartbeat", body)
        except BaseException:
            self.pending.primaried.update(extend)   # ask again next time
            raise
        if await self._rules(reply):
            if isinstance(reply.get("extended"), list):
                self.reports.extended += len(reply["extended"])
            await self._delete(reply)
        # honoured from any master, primary or not: it only asks for our full
        # chunk list, sent to that master alone, and changes nothing here
        if isinstance(reply, dict) and reply.get("reregister"):
            log.info("master %s asks %s to register again", self.master_url, self.server_id)
            self.registered = False
            await self.register()

    async def register(self) -> None:
        self.pending.clear()            # the full list below supersedes them
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
        if await self._rules(reply):
            await self._delete(reply)

    async def report(self) -> None:
        taken = self.pending.take()
        try:
            reply = await self._call("report_chunks", dict(taken))
        except BaseException:
            self.pending.put_back(taken)
            raise
        if await self._rules(reply):
            await self._delete(reply)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
                if self.failures:
                    log.info("master %s reachable again", self.master_url)
                self.failures = 0
                self.last_heartbeat = time.time()
            except GFSError as exc:
                self._failed(exc)
            except Exception:  # a bug here must not stop the chunkd serving
                log.exception("heartbeat round with %s failed", self.master_url)
                self._failed(None)
            await self._pause()

    async def _pause(self) -> None:
        if self.failures:
            await trio.sleep(retry.heartbeat(self.interval).delay(self.failures - 1))
            return
        with trio.move_on_after(self.interval):
            await self.pending.urgent.wait()

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

    async def _rules(self, reply: Any) -> bool:
        """Whether ``reply`` may be acted upon: it comes from a primary whose
        epoch is no older than the highest seen (:meth:`Fence.heard`, which
        raises that epoch). Notes the master's role and epoch for /status."""
        epoch = reply.get("epoch") if isinstance(reply, dict) else None
        primary = reply.get("primary") if isinstance(reply, dict) else None
        if (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0
                or not isinstance(primary, bool)):
            self._note_role("unknown", 0)
            return False
        rules = await self.fence.heard(self.master_url, epoch, primary)
        self._note_role("primary" if rules else "stale" if primary else "shadow", epoch)
        return rules

    def _note_role(self, role: str, epoch: int) -> None:
        if role != self.role:
            level = logging.WARNING if role in ("stale", "unknown") else logging.INFO
            log.log(level, "master %s: %s in epoch %d%s", self.master_url, role, epoch,
                    {"stale": f" (epoch {self.fence.epoch} is newer: its orders are ignored)",
                     "unknown": " (its reply names no epoch and role: ignored)"}.get(role, ""))
        self.role, self.epoch = role, epoch

    async def _delete(self, reply: dict[str, Any]) -> None:
        """Delete the chunks a primary's reply lists under ``delete``."""
        handles = reply.get("delete")
        for h in handles if isinstance(handles, list) else []:
            if isinstance(h, int) and not isinstance(h, bool) and 0 <= h < MAX_HANDLE:
                if await self.store.delete(h):
                    log.info("deleted chunk %016x at the request of master %s", h,
                             self.master_url)

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
