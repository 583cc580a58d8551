"""The chunk replicas on this chunkd as reads, mutations and copies see them:
a :class:`ChunkStore` plus each chunk's order lock and the corruption path.

A CORRUPT replica is never served: it is reported to the master
(``report_chunks`` corrupt) and deleted here, so the master re-replicates it
(GFS §5.2). :meth:`Replicas.read` and :meth:`Replicas.guard` take that path for
every store operation that finds a checksum mismatch; the scrubber calls
:meth:`Replicas.corrupt` directly.

The order lock of a chunk (:meth:`Replicas.order_lock`) serialises the
mutations of that chunk at this replica; :mod:`chunkd.mutations.order` says how
the primary uses it. Copies (:mod:`chunkd.services.copy`) take it too, so no
mutation interleaves with a copy.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import trio

from gfsfs.common.errors import Code, GFSError

from chunkd.storage.store import ChunkStore

if TYPE_CHECKING:
    from chunkd.services.heartbeat import ChunkReports

log = logging.getLogger(__name__)

T = TypeVar("T")

COPYING = 0                     # the version of a chunk being copied in or made


@asynccontextmanager
async def filling(store: ChunkStore, handle: int, version: int) -> AsyncIterator[None]:
    """A new replica ``handle`` for the body to fill: at version :data:`COPYING`
    (which no master considers current, so a crash leaves only a stale replica)
    until every byte is written and fsync'd, then at ``version``. Removed if
    the body fails."""
    await store.create(handle, COPYING)
    try:
        yield
        await store.sync(handle)
        await store.set_version(handle, version)
    except BaseException:
        if store.version(handle) == COPYING:
            await store.delete(handle)
        raise


class Replicas:
    """``store``'s chunks; ``reports``: what the heartbeat tells the master.
    ``copying``: handles being copied in (replicate) or made (copy) right now."""

    def __init__(self, store: ChunkStore, reports: ChunkReports) -> None:
        self.store = store
        self.reports = reports
        self.copying: set[int] = set()
        self._order: dict[int, trio.Lock] = {}

    def order_lock(self, handle: int) -> trio.Lock:
        """The lock that serialises mutations of one chunk at this replica (the
        primary's serial order, GFS §3.1; copies use it too)."""
        lock = self._order.get(handle)
        if lock is None:
            lock = self._order[handle] = trio.Lock()
        return lock

    async def read(self, handle: int, offset: int, length: int) -> bytes:
        """Bytes of a chunk, checksums verified; a corrupt replica is reported
        to the master and dropped here (GFS §5.2) before the error is raised."""
        return await self.guard(handle, self.store.read(handle, offset, length))

    async def guard(self, handle: int, op: Awaitable[T]) -> T:
        """Await a store operation; a CORRUPT replica is reported and dropped."""
        try:
            return await op
        except GFSError as exc:
            if exc.code == Code.CORRUPT:
                await self.corrupt(handle, exc)
            raise

    async def corrupt(self, handle: int, exc: GFSError) -> None:
        """Report the bad replica to the master and drop it here."""
        log.error("chunk %016x is corrupt (%s): reporting and deleting it", handle, exc)
        self.reports.mark_corrupt(handle)
        await self.store.delete(handle)
        self._order.pop(handle, None)

    async def delete(self, handles: list[int]) -> None:
        """Delete these chunks (the master's garbage collection) and their locks."""
        for h in handles:
            await self.store.delete(h)
            self._order.pop(h, None)
