"""chunkd.mutations.order and chunkd.storage.replicas on their own, without
the HTTP face: one replica on a memory store, no secondaries."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from chunkd.mutations.order import Mutations
from chunkd.mutations.push import PushBuffers
from chunkd.services.heartbeat import ChunkReports, PendingReports
from chunkd.storage.replicas import Replicas
from chunkd.storage.store import BLOCK_SIZE, MemoryChunkStore
from gfsfs.common.errors import Code, GFSError

H = 7
CHUNK = 4 * BLOCK_SIZE


def run(test: Callable[[Mutations], Awaitable[None]]) -> None:
    async def main() -> None:
        store = MemoryChunkStore()
        await store.create(H, 1)
        reports = ChunkReports()
        reports.subscribe()                 # one master's queue: pending(m)
        replicas = Replicas(store, reports)
        await test(Mutations(replicas, PushBuffers(30.0), None, 0.0))  # type: ignore[arg-type]
    trio.run(main)


def pending(m: Mutations) -> PendingReports:
    """What the one master of ``run`` has yet to be told."""
    return m.reports.masters[0]


def test_commit_applies_pushed_data_and_drops_it() -> None:
    async def go(m: Mutations) -> None:
        m.buffers.put("ab", b"hello")
        assert await m.commit({"handle": H, "version": 1, "offset": 3, "data_id": "ab"}) == {
            "length": 5}
        assert await m.store.read(H, 0, 100) == bytes(3) + b"hello"
        assert len(m.buffers) == 0 and pending(m).take_extend() == [H]
        with pytest.raises(GFSError) as e:      # the data is gone: push again
            await m.commit({"handle": H, "version": 1, "offset": 3, "data_id": "ab"})
        assert e.value.code is Code.EAGAIN
    run(go)


def test_apply_keeps_the_data_for_a_retry() -> None:
    async def go(m: Mutations) -> None:
        m.buffers.put("cd", b"xy")
        req = {"handle": H, "version": 1, "offset": 0, "data_id": "cd"}
        assert await m.apply(req) == await m.apply(req) == {"length": 2}
        assert pending(m).take_extend() == []     # a secondary extends no lease
    run(go)


def test_record_append_picks_offsets_then_pads_to_the_next_chunk() -> None:
    async def go(m: Mutations) -> None:
        rec = bytes(range(256)) * (BLOCK_SIZE // 256)
        req = {"handle": H, "version": 1, "data": rec[:100], "chunk_size": CHUNK}
        assert await m.append(req) == {"offset": 0, "length": 100}
        assert await m.append({**req, "min_offset": 500}) == {"offset": 500, "length": 100}
        assert (await m.append({**req, "data": rec[:1000]}))["offset"] == 600
        m.buffers.put("ee", rec)
        big = {"handle": H, "version": 1, "data_id": "ee", "chunk_size": CHUNK}
        assert await m.append(big) == {"offset": 1600, "length": BLOCK_SIZE}
        assert len(m.buffers) == 0           # applied everywhere: dropped
        m.buffers.put("ee", rec)
        assert await m.append({**big, "min_offset": 3 * BLOCK_SIZE + 1}) == {
            "retry": "next_chunk", "padded": CHUNK - 1600 - BLOCK_SIZE}
        assert m.store.length(H) == CHUNK
        with pytest.raises(GFSError) as e:
            await m.append({**req, "version": 2})
        assert e.value.code is Code.STALE
    run(go)


def test_a_corrupt_replica_is_reported_and_dropped_with_its_lock() -> None:
    async def go(m: Mutations) -> None:
        store = m.store
        assert isinstance(store, MemoryChunkStore)
        await store.write(H, 0, b"z" * 10)
        lock = m.replicas.order_lock(H)
        assert m.replicas.order_lock(H) is lock
        store.data[H][3] ^= 1
        with pytest.raises(GFSError) as e:
            await m.replicas.read(H, 0, 10)
        assert e.value.code is Code.CORRUPT
        assert pending(m).corrupt == {H} and m.reports.corrupt_found == 1 and store.version(H) is None
        assert m.replicas.order_lock(H) is not lock
    run(go)
