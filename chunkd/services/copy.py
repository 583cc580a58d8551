"""Snapshot support on the chunkd (GFS §3.4): ``copy`` and ``set_versions``.

``POST /rpc/copy``: copy a chunk to a new handle on this chunkd.

Copy-on-write after a snapshot: the master tells every chunkd holding a
replica of a shared chunk to copy it *locally* to a new handle
(``{handle, version, new_handle, new_version}``); no byte crosses the network.

The copy is made under the source chunk's order lock (no mutation of the
source interleaves), read through the store (every 64 KiB block's CRC32C is
verified: a corrupt source answers CORRUPT and is reported and dropped, as on
any read) and written in whole blocks, so the copy computes its own
checksums. While copied the new chunk is at version 0 (never current: a crash
leaves only a stale replica, deleted when reported); it takes ``new_version``
once every byte is fsync'd. The master learns the location from the reply
(the chunk is not reported as added: until the master logs the copy, the
handle is unknown to it and a report would make it delete the copy).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from gfsfs.common.errors import Code, GFSError
from gfsfs.common.rpc import need

from chunkd.storage.replicas import COPYING, filling
from chunkd.storage.store import check_handle, check_version

if TYPE_CHECKING:
    from chunkd.storage.replicas import Replicas
    from chunkd.storage.store import ChunkStore

log = logging.getLogger(__name__)

PIECE = 1 << 20                 # bytes read and written at a time (whole blocks)
SET_VERSIONS_AT_ONCE = 32       # version changes (each fsync'd) in flight in set_versions


async def copy_chunk(replicas: Replicas, req: dict[str, Any]) -> dict[str, Any]:
    handle = check_handle(need(req, "handle", int))
    version = check_version(need(req, "version", int))
    new = check_handle(need(req, "new_handle", int))
    new_version = check_version(need(req, "new_version", int))
    if new_version == COPYING:
        raise GFSError(Code.BADREQ, "version 0 is reserved for copies in progress")
    if new == handle:
        raise GFSError(Code.BADREQ, "a chunk cannot be copied onto itself")
    store = replicas.store
    busy = replicas.copying
    if new in busy:
        raise GFSError(Code.EAGAIN, f"chunk {new:016x} is being copied already")
    have = store.version(new)
    if have is not None and have == new_version:
        # already made (a retried copy whose reply was lost)
        return {"handle": new, "version": have, "length": store.length(new) or 0}
    busy.add(new)
    try:
        async with replicas.order_lock(handle):
            src = store.version(handle)
            if src is None:
                raise GFSError(Code.NOCHUNK, f"no chunk {handle:016x}")
            if src != version:
                raise GFSError(Code.STALE,
                               f"chunk {handle:016x} is at version {src}, not {version}")
            length = store.length(handle) or 0
            if have is not None:
                await store.delete(new)
            async with filling(store, new, new_version):
                pos = 0
                while pos < length:
                    piece = await replicas.read(handle, pos, min(PIECE, length - pos))
                    if not piece:
                        raise GFSError(Code.EIO, f"chunk {handle:016x} shrank during a copy")
                    await store.write(new, pos, piece, expect_version=COPYING)
                    pos += len(piece)
    finally:
        busy.discard(new)
    log.info("chunk %016x v%d copied locally to %016x v%d: %d bytes", handle, version, new,
             new_version, length)
    return {"handle": new, "version": new_version, "length": length}


async def set_versions(store: ChunkStore, req: dict[str, Any]) -> dict[str, Any]:
    """``set_versions {versions: [[handle, version], ...]}`` -> ``{"failed":
    [[handle, code], ...]}``: many ``set_version`` at once (a snapshot revoking
    the leases of a whole tree: one RPC per chunkd instead of one per chunk).
    Each version is fsync'd before the reply, as ``set_version`` does."""
    items = need(req, "versions", list)
    pairs = []
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise GFSError(Code.BADREQ, "versions must be [[handle, version], ...]")
        pairs.append((check_handle(item[0]), check_version(item[1])))
    failed: list[list[Any]] = []
    limiter = trio.CapacityLimiter(SET_VERSIONS_AT_ONCE)

    async def one(handle: int, version: int) -> None:
        async with limiter:
            try:
                await store.set_version(handle, version)
            except GFSError as exc:
                failed.append([handle, exc.code])

    async with trio.open_nursery() as nursery:
        for handle, version in pairs:
            nursery.start_soon(one, handle, version)
    return {"failed": failed}
