"""ChunkStore: both twins (disk, memory) pass the same tests."""
from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from chunkd.storage.diskstore import DiskChunkStore
from chunkd.storage.store import BLOCK_SIZE, ChunkStore, MemoryChunkStore
from gfsfs.common.errors import GFSError

BS = BLOCK_SIZE
H = 0x1234


def make_store(kind: str, tmp_path: Path, **kw: Any) -> ChunkStore:
    if kind == "memory":
        return MemoryChunkStore(**kw)
    store = DiskChunkStore(tmp_path / "cs1", **kw)
    trio.run(store.open)
    return store


def flip(store: ChunkStore, handle: int, offset: int) -> None:
    """Flip one byte of the chunk's data behind the store's back."""
    if isinstance(store, MemoryChunkStore):
        store.data[handle][offset] ^= 0xFF
        return
    assert isinstance(store, DiskChunkStore)
    with open(store._data_path(handle), "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.fixture(params=["disk", "memory"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(fn: Callable[[], Any]) -> Any:
    return trio.run(fn)


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


def test_create_write_read_version(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    data = pattern(3 * BS + 100)

    async def go() -> None:
        await store.create(H, 5)
        await store.write(H, 0, data)
        assert await store.read(H, 0, len(data)) == data
        assert await store.read(H, BS - 10, 20) == data[BS - 10:BS + 10]
        assert await store.read(H, len(data) - 5, 1000) == data[-5:]   # capped at the end
        assert await store.read(H, len(data) + 10, 10) == b""
        await store.set_version(H, 6)
        await store.sync(H)
    run(go)
    assert store.version(H) == 6
    assert store.list() == [(H, 6)]
    assert store.used_bytes() == len(data)


def test_create_holding_bytes_and_over_an_orphan(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    revoked: list[int] = []
    store.on_delete.append(revoked.append)

    async def go() -> None:
        await store.create(H, 1, 100, b"first")
        assert store.length(H) == 105
        assert await store.read(H, 0, 200) == bytes(100) + b"first"
        # the same handle again (an orphan a crashed master's lost record left):
        # emptied, so nothing of the old bytes shows through a later hole
        await store.create(H, 3, 0, b"ab")
        assert store.version(H) == 3 and store.length(H) == 2
        await store.truncate(H, 200)
        assert await store.read(H, 0, 200) == b"ab" + bytes(198)
        assert revoked == [H]
        # bytes past the largest chunk: refused, and no chunk is made
        with pytest.raises(GFSError):
            await store.create(H + 1, 1, (1 << 30) - 1, b"xy")
        assert store.version(H + 1) is None
    run(go)
    assert store.used_bytes() == 200


def test_partial_block_writes_keep_neighbours(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    base = bytearray(pattern(4 * BS))

    async def go() -> None:
        await store.create(H, 1)
        await store.write(H, 0, bytes(base))
        for off, n in [(10, 5), (BS - 3, 7), (2 * BS + 1, BS + 17), (4 * BS - 1, 1)]:
            piece = pattern(n, seed=off)
            base[off:off + n] = piece
            await store.write(H, off, piece)
        assert await store.read(H, 0, 4 * BS) == bytes(base)
    run(go)


def test_sparse_gap_reads_as_zeros(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)

    async def go() -> None:
        await store.create(H, 1)
        await store.write(H, 0, b"head")
        await store.write(H, 3 * BS + 5, b"tail")
        got = await store.read(H, 0, 4 * BS)
        assert got == b"head" + bytes(3 * BS + 1) + b"tail"
        await store.write(H, 5 * BS, b"")        # an empty write past the end changes nothing
        assert store.length(H) == 3 * BS + 9
    run(go)


def test_truncate_shrinks_and_extends(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    data = pattern(2 * BS + 50)

    async def go() -> None:
        await store.create(H, 1)
        await store.write(H, 0, data)
        await store.truncate(H, BS + 7)
        assert await store.read(H, 0, 10 * BS) == data[:BS + 7]
        await store.truncate(H, 3 * BS)
        assert await store.read(H, 0, 10 * BS) == data[:BS + 7] + bytes(3 * BS - BS - 7)
        await store.truncate(H, 0)
        assert await store.read(H, 0, 10) == b""
    run(go)


def test_flipped_byte_is_corrupt_for_that_block_only(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    data = pattern(5 * BS)

    async def go() -> None:
        await store.create(H, 1)
        await store.write(H, 0, data)
        flip(store, H, 2 * BS + BS // 2)        # the middle of block 2
        assert await store.read(H, 0, 2 * BS) == data[:2 * BS]
        assert await store.read(H, 3 * BS, 2 * BS) == data[3 * BS:]
        for off, n in [(2 * BS, 1), (0, 5 * BS), (2 * BS - 1, 2), (3 * BS - 1, 1)]:
            with pytest.raises(GFSError) as err:
                await store.read(H, off, n)
            assert err.value.code == "CORRUPT"
        # a partial write into the bad block must not launder it with a fresh CRC
        with pytest.raises(GFSError) as err:
            await store.write(H, 2 * BS + 1, b"x")
        assert err.value.code == "CORRUPT"
        # a write covering the whole block replaces it: good again
        await store.write(H, 2 * BS, data[2 * BS:3 * BS])
        assert await store.read(H, 0, 5 * BS) == data
    run(go)


def test_version_check_and_unknown_chunk(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)

    async def go() -> None:
        with pytest.raises(GFSError) as err:
            await store.read(H, 0, 1)
        assert err.value.code == "NOCHUNK"
        await store.create(H, 3)
        with pytest.raises(GFSError) as err:
            await store.write(H, 0, b"x", expect_version=2)
        assert err.value.code == "STALE"
        with pytest.raises(GFSError) as err:
            await store.read(-1, 0, 1)
        assert err.value.code == "BADREQ"
        assert await store.delete(H)
        assert not await store.delete(H)
        assert store.list() == []
    run(go)


def test_reserve_gives_enospc_and_leaves_chunk_intact(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path, capacity_bytes=4 * BS, reserve_bytes=BS)
    data = pattern(2 * BS + 10)

    async def go() -> None:
        await store.create(H, 1)
        await store.write(H, 0, data)
        with pytest.raises(GFSError) as err:
            await store.write(H, BS, pattern(2 * BS + 100, seed=9))  # leaves < BS free
        assert err.value.code == "ENOSPC"
        assert await store.read(H, 0, 10 * BS) == data
        await store.write(H, 10, b"fits")                      # an overwrite needs no space
    run(go)
    cap, used, free = store.space()
    assert (cap, used, free) == (4 * BS, 2 * BS + 10, 2 * BS - 10)


def test_real_enospc_mid_write_rolls_back(kind: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store(kind, tmp_path)
    data = pattern(2 * BS + 10)
    real_pwrite = store._pwrite
    calls = []

    def failing_pwrite(handle: int, offset: int, buf: bytes) -> None:
        calls.append(offset)
        if len(calls) == 1:                      # half the bytes land, then the disk is full
            real_pwrite(handle, offset, buf[:len(buf) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_pwrite(handle, offset, buf)

    async def go() -> None:
        await store.create(H, 1)
        await store.write(H, 0, data)
        monkeypatch.setattr(store, "_pwrite", failing_pwrite)
        with pytest.raises(GFSError) as err:
            await store.write(H, BS, pattern(3 * BS, seed=5))
        assert err.value.code == "ENOSPC"
        assert store.length(H) == len(data)
        assert await store.read(H, 0, 10 * BS) == data
    run(go)


def test_disk_store_reopens_with_its_chunks(tmp_path: Path) -> None:
    store = make_store("disk", tmp_path)
    data = pattern(BS + 3)

    async def go() -> None:
        await store.create(7, 2)
        await store.write(7, 0, data)
        await store.create(9, 4)
        again = DiskChunkStore(tmp_path / "cs1")
        await again.open()
        assert again.list() == [(7, 2), (9, 4)]
        assert await again.read(7, 0, 2 * BS) == data
    run(go)
    names = sorted(os.listdir(tmp_path / "cs1"))
    assert names == ["0000000000000007.chunk", "0000000000000007.meta",
                     "0000000000000009.chunk", "0000000000000009.meta"]
