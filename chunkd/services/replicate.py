"""``POST /rpc/replicate``: copy a chunk from another chunkd (GFS §4.3).

The master picks a source replica and tells this chunkd (the target) to fetch
the chunk: ``{handle, version, source}``. The bytes come from the source's
``GET /chunk/<handle>?offset&length&version`` (which verifies every block's
CRC32C before sending it; a mismatch answers CORRUPT there) and are written
here in whole 64 KiB blocks, so this replica computes its own checksums.

Crash safety: while it is copied the chunk exists here at version 0, which no
master ever considers current (versions start at 1), so a half copy left by a
crash is reported as stale and deleted. Only once every byte is written and
fsync'd does the chunk take ``version`` (an fsync'd meta header) and get
reported to the master as added. On any failure the partial copy is removed.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gfsfs.common.errors import Code, GFSError
from gfsfs.common.retry import reaching
from gfsfs.common.rpc import decode_reply, need

from chunkd.mutations.push import check_addr
from chunkd.storage.replicas import COPYING, filling
from chunkd.storage.store import ChunkStore, check_handle, check_version

if TYPE_CHECKING:
    import httpx

    from chunkd.storage.replicas import Replicas

log = logging.getLogger(__name__)

PIECE = 1 << 20                 # bytes written to the store at a time (whole blocks)
FETCH = 64 << 20                # bytes asked of the source per GET


async def replicate(replicas: Replicas, http: httpx.AsyncClient,
                    req: dict[str, Any]) -> dict[str, Any]:
    """The ``replicate`` RPC: fetch ``handle`` at ``version`` from ``source``
    (through ``http``)."""
    handle = check_handle(need(req, "handle", int))
    version = check_version(need(req, "version", int))
    source = check_addr(need(req, "source", str))
    if version == COPYING:
        raise GFSError(Code.BADREQ, "version 0 is reserved for copies in progress")
    busy = replicas.copying
    if handle in busy:
        raise GFSError(Code.EAGAIN, f"chunk {handle:016x} is being copied already")
    store = replicas.store
    have = store.version(handle)
    if have is not None and have >= version:
        # already here (a retried copy whose reply was lost): nothing to fetch
        return {"handle": handle, "version": have, "length": store.length(handle) or 0}
    busy.add(handle)
    try:
        if have is not None:
            await store.delete(handle)          # a stale replica: replaced
        async with filling(store, handle, version):
            length = await _fetch(store, http, handle, version, source)
    finally:
        busy.discard(handle)
    replicas.reports.add(handle, version)
    log.info("chunk %016x v%d copied from %s: %d bytes", handle, version, source, length)
    return {"handle": handle, "version": version, "length": length}


async def _fetch(store: ChunkStore, http: httpx.AsyncClient, handle: int, version: int,
                 source: str) -> int:
    """Stream the chunk from ``source`` into the store; its length."""
    offset = 0
    while True:
        got = await _fetch_range(store, http, handle, version, source, offset, FETCH)
        offset += got
        if got < FETCH:
            return offset


async def _fetch_range(store: ChunkStore, http: httpx.AsyncClient, handle: int,
                       version: int, source: str, offset: int, length: int) -> int:
    url = f"{source}/chunk/{handle}"
    params = {"offset": offset, "length": length, "version": version}
    pending = bytearray()
    pos = offset
    with reaching(source):
        async with http.stream("GET", url, params=params) as resp:
            if resp.status_code >= 400:
                decode_reply(resp.status_code, await resp.aread())
            async for piece in resp.aiter_bytes():
                pending += piece
                while len(pending) >= PIECE:
                    await store.write(handle, pos, bytes(pending[:PIECE]),
                                      expect_version=COPYING)
                    del pending[:PIECE]
                    pos += PIECE
    if pending:
        await store.write(handle, pos, bytes(pending), expect_version=COPYING)
        pos += len(pending)
    return pos - offset
