"""The background scrubber (GFS §5.2): re-verify every chunk's CRC32Cs.

Chunks that are rarely read would otherwise hide a bad block until the day it
is needed. :class:`Scrubber` reads every chunk through the store (which checks
each 64 KiB block against its CRC32C) at ``[chunk_server] scrub_bytes_per_sec``
at most. A CORRUPT chunk goes to ``on_corrupt`` -- the server's own path for a
bad replica: reported to the master (``report_chunks`` corrupt), deleted here --
and the master re-replicates it from a good replica.

``run_once`` is one full pass over the chunks present when it starts; a pass
reads at most :data:`PIECE` bytes at a time, so the per-chunk lock is never
held long and client reads and writes go on meanwhile.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from gfsfs.common.errors import Code, GFSError

from chunkd.storage.store import ChunkStore

log = logging.getLogger(__name__)

PIECE = 1 << 20             # bytes verified per store read
MIN_PASS_SECONDS = 5.0      # a pass over few chunks is not repeated sooner than this

OnCorrupt = Callable[[int, GFSError], Awaitable[None]]


class Scrubber:
    def __init__(self, store: ChunkStore, on_corrupt: OnCorrupt, bytes_per_sec: int,
                 min_pass: float = MIN_PASS_SECONDS) -> None:
        self.store = store
        self.on_corrupt = on_corrupt
        self.rate = bytes_per_sec
        self.min_pass = min_pass
        self.passes = 0
        self.bytes_verified = 0
        self.corrupt_found = 0

    async def run_once(self) -> list[int]:
        """One pass; the handles found corrupt."""
        bad: list[int] = []
        for handle, version in self.store.list():
            if self.store.version(handle) != version:
                continue                    # deleted or replaced meanwhile
            if await self._scrub_chunk(handle):
                bad.append(handle)
        self.passes += 1
        return bad

    async def _scrub_chunk(self, handle: int) -> bool:
        offset = 0
        while True:
            length = self.store.length(handle)
            if length is None or offset >= length:
                return False
            started = trio.current_time()
            try:
                data = await self.store.read(handle, offset, PIECE)
            except GFSError as exc:
                if exc.code == Code.CORRUPT:
                    self.corrupt_found += 1
                    log.error("scrub: chunk %016x is corrupt: %s", handle, exc)
                    await self.on_corrupt(handle, exc)
                    return True
                if exc.code == Code.NOCHUNK:
                    return False            # deleted meanwhile
                raise
            if not data:
                return False
            offset += len(data)
            self.bytes_verified += len(data)
            await self._throttle(len(data), started)

    async def _throttle(self, nbytes: int, started: float) -> None:
        if self.rate > 0:
            await trio.sleep_until(started + nbytes / self.rate)
        else:
            await trio.sleep(0)

    async def run_forever(self) -> None:
        if self.rate <= 0:
            log.info("scrubbing is off (scrub_bytes_per_sec = 0)")
            return
        while True:
            started = trio.current_time()
            try:
                await self.run_once()
            except Exception:
                log.exception("scrub pass failed")
            await trio.sleep_until(started + self.min_pass)
