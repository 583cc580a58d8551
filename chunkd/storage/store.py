"""Chunk storage: chunk data plus a CRC32C per 64 KiB block, verified on read.

:class:`ChunkStore` holds the logic (block checksums, read-modify-write of edge
blocks, space checks, rollback on failure) over a handful of primitive
operations that two twins implement:

- :class:`chunkd.storage.diskstore.DiskChunkStore`: chunk files on disk; primitives run
  in worker threads.
- :class:`MemoryChunkStore`: the same in dictionaries, for tests.

Invariants:

- Every block a write or truncate touches gets its CRC recomputed; the old
  bytes kept in a partially overwritten block are verified first, so a corrupt
  block never gets a fresh, valid checksum.
- A block whose CRC does not match is never returned: ``read`` raises CORRUPT.
- Data is written before its CRCs; on an OSError (e.g. a full disk) the chunk's
  old bytes, length and CRCs are put back before the error (ENOSPC) is raised.
- One trio lock per chunk serializes operations on that chunk (the lock is held
  across the worker thread call); different chunks proceed in parallel.
- Handles are validated integers; no path ever comes from the wire.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import crc32c
import trio

from gfsfs.common.errors import Code, GFSError, from_oserror
from gfsfs.common.protocol import BLOCK_SIZE

log = logging.getLogger(__name__)

MAX_HANDLE = 1 << 63
MAX_CHUNK_BYTES = 1 << 30        # sanity bound on a chunk's length (chunk_size is 64 MiB)
ZERO_BLOCK = bytes(BLOCK_SIZE)

T = TypeVar("T")


def check_handle(handle: object) -> int:
    """``handle`` as a chunk handle (an int in 0 .. 2**63-1), BADREQ otherwise."""
    if isinstance(handle, bool) or not isinstance(handle, int) or not 0 <= handle < MAX_HANDLE:
        raise GFSError(Code.BADREQ, f"bad chunk handle {handle!r}")
    return handle


def check_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 1 << 64:
        raise GFSError(Code.BADREQ, f"bad chunk version {version!r}")
    return version


def block_range(start: int, end: int) -> range:
    """Indexes of the blocks that bytes ``[start, end)`` touch."""
    if end <= start:
        return range(0)
    return range(start // BLOCK_SIZE, (end - 1) // BLOCK_SIZE + 1)


def nblocks(length: int) -> int:
    return (length + BLOCK_SIZE - 1) // BLOCK_SIZE


class _Zeros:
    """``n`` zero bytes, sliced without allocating more than one block."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, s: slice) -> memoryview:
        return memoryview(ZERO_BLOCK)[: s.stop - s.start]


@dataclass
class ChunkInfo:
    version: int
    length: int


class ChunkStore(ABC):
    """The chunks of one chunkd: versions, data, block checksums."""

    def __init__(self, capacity_bytes: int = 0, reserve_bytes: int = 0) -> None:
        self.capacity_bytes = capacity_bytes
        self.reserve_bytes = reserve_bytes
        self._chunks: dict[int, ChunkInfo] = {}
        self._locks: dict[int, trio.Lock] = {}
        self.fsyncs = 0           # chunk fsync(2)s done (for /status and tests)
        self.bytes_read = 0       # chunk bytes returned by read (for /metrics)
        self.bytes_written = 0    # chunk bytes stored by write (for /metrics)
        self.on_delete: list[Callable[[int], None]] = []   # told each deleted handle

    # ------------------------------------------------------------ queries

    def version(self, handle: int) -> int | None:
        info = self._chunks.get(handle)
        return None if info is None else info.version

    def length(self, handle: int) -> int | None:
        info = self._chunks.get(handle)
        return None if info is None else info.length

    def count(self) -> int:
        return len(self._chunks)

    def list(self) -> list[tuple[int, int]]:
        return [(h, info.version) for h, info in sorted(self._chunks.items())]

    def used_bytes(self) -> int:
        # called from worker threads too (_write_blocks -> _check_space) while
        # the trio thread adds and drops chunks: sum over a copy (list() of a
        # dict view runs without releasing the GIL)
        return sum(info.length for info in list(self._chunks.values()))

    def space(self) -> tuple[int, int, int]:
        """(capacity, used, free) in bytes; ``capacity_bytes`` overrides the disk's."""
        total, avail = self._disk_space()
        used = self.used_bytes()
        if self.capacity_bytes:
            return self.capacity_bytes, used, max(0, min(avail, self.capacity_bytes - used))
        return total, used, avail

    # ------------------------------------------------------------ operations

    async def create(self, handle: int, version: int, offset: int = 0,
                     data: bytes = b"") -> None:
        """A new chunk, empty or holding ``data`` at ``offset``, made in one
        worker-thread call; if the bytes cannot be stored the chunk is not
        made. A chunk of that handle already here is an orphan (made for an
        allocation whose log record a crashed master lost): it is emptied
        first, so the new chunk never shows its bytes."""
        check_handle(handle)
        check_version(version)
        _check_range(offset, len(data))
        async with self._lock(handle):
            old = self._chunks.pop(handle, None)
            if old is not None:
                for hook in self.on_delete:
                    hook(handle)
            info = ChunkInfo(version, 0)
            await self._io(self._create_holding, handle, info, offset, data, old)
            self._chunks[handle] = info
            self.bytes_written += len(data)

    async def set_version(self, handle: int, version: int) -> None:
        check_version(version)
        async with self._lock(handle):
            info = self._info(handle)
            await self._io(self._write_version, handle, version)
            info.version = version

    async def write(self, handle: int, offset: int, data: bytes,
                    expect_version: int | None = None) -> None:
        """Put ``data`` at ``offset``; a gap after the old end reads as zeros.
        An empty write changes nothing (but still checks handle and version)."""
        _check_range(offset, len(data))
        async with self._lock(handle):
            info = self._info(handle, expect_version)
            if data:
                await self._io(self._write_blocks, handle, info, offset, data)
                self.bytes_written += len(data)

    async def truncate(self, handle: int, length: int,
                       expect_version: int | None = None) -> None:
        _check_range(length, 0)
        async with self._lock(handle):
            info = self._info(handle, expect_version)
            await self._io(self._truncate_blocks, handle, info, length)

    async def read(self, handle: int, offset: int, length: int) -> bytes:
        """At most ``length`` bytes at ``offset`` (fewer at the chunk's end),
        every block touched verified; CORRUPT on a mismatch."""
        _check_range(offset, length)
        async with self._lock(handle):
            info = self._info(handle)
            data = await self._io(self._read_blocks, handle, info, offset, length)
            self.bytes_read += len(data)
            return data

    async def sync(self, handle: int) -> None:
        async with self._lock(handle):
            self._info(handle)
            await self._io(self._sync_files, handle)
            self.fsyncs += 1

    async def delete(self, handle: int) -> bool:
        """Remove the chunk; False when it did not exist."""
        async with self._lock(handle):
            if self._chunks.pop(handle, None) is None:
                return False
            self._locks.pop(handle, None)
            for hook in self.on_delete:
                hook(handle)
            await self._io(self._remove_files, handle)
            return True

    # ------------------------------------------------------------ block logic (worker thread)

    def _create_holding(self, handle: int, info: ChunkInfo, offset: int, data: bytes,
                        old: ChunkInfo | None) -> None:
        if old is not None:
            log.warning("chunk %016x exists already (an orphan): emptied for a new chunk",
                        handle)
            self._remove_files(handle)
        self._create_files(handle, info.version)
        if data:
            try:
                self._write_blocks(handle, info, offset, data)
            except BaseException:
                self._remove_files(handle)
                raise

    def _write_blocks(self, handle: int, info: ChunkInfo, offset: int, data: bytes) -> None:
        old_len = info.length
        lo, end = min(offset, old_len), offset + len(data)
        if end <= lo:
            return
        new_len = max(old_len, end)
        self._check_space(new_len - old_len)
        blocks = block_range(lo, end)
        old_crcs = self._old_crcs(handle, blocks, old_len)
        prefix, suffix = self._edges(handle, blocks, lo, end, old_len, old_crcs)
        backup = self._pread(handle, offset, min(end, old_len) - offset) if offset < old_len else b""
        segments: list[tuple[int, Any]] = [
            (blocks.start * BLOCK_SIZE, prefix), (lo, _Zeros(offset - lo)),
            (offset, memoryview(data)), (end, suffix)]
        crcs = [_block_crc(k, new_len, segments) for k in blocks]
        try:
            if offset > old_len:
                self._set_length(handle, offset)
            self._pwrite(handle, offset, data)
            self._write_crcs(handle, blocks.start, crcs)
        except OSError as exc:
            self._rollback(handle, old_len, offset, backup, blocks.start, old_crcs)
            raise from_oserror(exc) from None
        info.length = new_len

    def _truncate_blocks(self, handle: int, info: ChunkInfo, length: int) -> None:
        old_len = info.length
        if length >= old_len:
            self._write_blocks(handle, info, length, b"")
            return
        k = length // BLOCK_SIZE
        crcs: list[int] = []
        if length % BLOCK_SIZE:
            block = self._verified_block(handle, k, old_len, self._old_crcs(handle, range(k, k + 1), old_len))
            crcs = [crc32c.crc32c(block[: length - k * BLOCK_SIZE])]
        try:
            self._set_length(handle, length)
            self._write_crcs(handle, k, crcs)
            self._set_crc_count(handle, nblocks(length))
        except OSError as exc:
            raise from_oserror(exc) from None
        info.length = length

    def _read_blocks(self, handle: int, info: ChunkInfo, offset: int, length: int) -> bytes:
        end = min(offset + length, info.length)
        if end <= offset:
            return b""
        blocks = block_range(offset, end)
        start = blocks.start * BLOCK_SIZE
        stop = min(blocks.stop * BLOCK_SIZE, info.length)
        raw = self._pread(handle, start, stop - start)
        crcs = self._read_crcs(handle, blocks.start, len(blocks))
        if len(raw) != stop - start:
            raise GFSError(Code.CORRUPT, f"chunk {handle:016x} is shorter than its length")
        view = memoryview(raw)
        for i, k in enumerate(blocks):
            got = crc32c.crc32c(view[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE])
            if i >= len(crcs) or got != crcs[i]:
                raise GFSError(Code.CORRUPT, f"chunk {handle:016x} block {k}: checksum mismatch")
        return raw[offset - start:end - start]

    def _old_crcs(self, handle: int, blocks: range, old_len: int) -> list[int]:
        """The stored CRCs of those of ``blocks`` that exist already."""
        count = max(0, min(blocks.stop, nblocks(old_len)) - blocks.start)
        return self._read_crcs(handle, blocks.start, count) if count else []

    def _edges(self, handle: int, blocks: range, lo: int, end: int, old_len: int,
               old_crcs: list[int]) -> tuple[bytes, bytes]:
        """The old bytes kept before ``lo`` in the first block and after ``end``
        in the last, each block verified before it is reused."""
        first, last = blocks.start, blocks.stop - 1
        prefix = suffix = b""
        if lo % BLOCK_SIZE:
            block = self._verified_block(handle, first, old_len, old_crcs)
            prefix = block[: lo - first * BLOCK_SIZE]
        if end < old_len and end % BLOCK_SIZE:
            block = self._verified_block(handle, last, old_len, old_crcs[last - first:])
            suffix = block[end - last * BLOCK_SIZE:]
        return prefix, suffix

    def _verified_block(self, handle: int, k: int, old_len: int, crcs: list[int]) -> bytes:
        start = k * BLOCK_SIZE
        block = self._pread(handle, start, min(start + BLOCK_SIZE, old_len) - start)
        if not crcs or crc32c.crc32c(block) != crcs[0]:
            raise GFSError(Code.CORRUPT, f"chunk {handle:016x} block {k}: checksum mismatch")
        return block

    def _check_space(self, growth: int) -> None:
        if growth <= 0:
            return
        _, _, free = self.space()
        if free - growth < self.reserve_bytes:
            raise GFSError(Code.ENOSPC, f"{growth} more bytes would leave less than "
                                     f"{self.reserve_bytes} bytes free ({free} free)")

    def _rollback(self, handle: int, old_len: int, offset: int, backup: bytes,
                  first_block: int, old_crcs: list[int]) -> None:
        """Put the chunk back as it was before a failed write."""
        try:
            self._set_length(handle, old_len)
            if backup:
                self._pwrite(handle, offset, backup)
            self._write_crcs(handle, first_block, old_crcs)
            self._set_crc_count(handle, nblocks(old_len))
        except OSError:
            log.exception("chunk %016x: rollback after a failed write failed", handle)

    # ------------------------------------------------------------ helpers

    def _lock(self, handle: int) -> trio.Lock:
        check_handle(handle)
        lock = self._locks.get(handle)
        if lock is None:
            lock = self._locks[handle] = trio.Lock()
        return lock

    def _info(self, handle: int, expect_version: int | None = None) -> ChunkInfo:
        info = self._chunks.get(handle)
        if info is None:
            raise GFSError(Code.NOCHUNK, f"no chunk {handle:016x}")
        if expect_version is not None and info.version != expect_version:
            raise GFSError(Code.STALE, f"chunk {handle:016x} is at version {info.version}, "
                                    f"not {expect_version}")
        return info

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a primitive: in a worker thread on disk, inline in memory."""
        return fn(*args)

    # ------------------------------------------------------------ primitives

    @abstractmethod
    def _create_files(self, handle: int, version: int) -> None: ...

    @abstractmethod
    def _write_version(self, handle: int, version: int) -> None: ...

    @abstractmethod
    def _pread(self, handle: int, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def _pwrite(self, handle: int, offset: int, data: bytes) -> None: ...

    @abstractmethod
    def _set_length(self, handle: int, length: int) -> None: ...

    @abstractmethod
    def _read_crcs(self, handle: int, first: int, count: int) -> list[int]: ...

    @abstractmethod
    def _write_crcs(self, handle: int, first: int, crcs: list[int]) -> None: ...

    @abstractmethod
    def _set_crc_count(self, handle: int, count: int) -> None: ...

    @abstractmethod
    def _sync_files(self, handle: int) -> None: ...

    @abstractmethod
    def _remove_files(self, handle: int) -> None: ...

    @abstractmethod
    def _disk_space(self) -> tuple[int, int]:
        """(total, available) bytes of the underlying medium."""


def _check_range(offset: object, length: int) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise GFSError(Code.BADREQ, f"bad offset {offset!r}")
    if length < 0 or offset + length > MAX_CHUNK_BYTES:
        raise GFSError(Code.EFBIG, f"range {offset}+{length} is past the largest chunk")


def _block_crc(k: int, new_len: int, segments: list[tuple[int, Any]]) -> int:
    """CRC32C of block ``k`` of the chunk after a write, from the pieces
    (start, bytes-like) that together cover the touched region."""
    bstart, bend = k * BLOCK_SIZE, min((k + 1) * BLOCK_SIZE, new_len)
    value = 0
    for seg_start, seg in segments:
        a, b = max(bstart, seg_start), min(bend, seg_start + len(seg))
        if a < b:
            value = crc32c.crc32c(seg[a - seg_start:b - seg_start], value=value)
    return value


# ---------------------------------------------------------------- in memory

class MemoryChunkStore(ChunkStore):
    """The in-memory twin; ``capacity_bytes`` (default 1 TiB) is its size."""

    def __init__(self, capacity_bytes: int = 0, reserve_bytes: int = 0) -> None:
        super().__init__(capacity_bytes or 1 << 40, reserve_bytes)
        self.data: dict[int, bytearray] = {}
        self.crcs: dict[int, list[int]] = {}

    def _create_files(self, handle: int, version: int) -> None:
        self.data[handle] = bytearray()
        self.crcs[handle] = []

    def _write_version(self, handle: int, version: int) -> None:
        pass

    def _pread(self, handle: int, offset: int, length: int) -> bytes:
        return bytes(self.data[handle][offset:offset + length])

    def _pwrite(self, handle: int, offset: int, data: bytes) -> None:
        buf = self.data[handle]
        if offset > len(buf):
            buf.extend(bytes(offset - len(buf)))
        buf[offset:offset + len(data)] = data

    def _set_length(self, handle: int, length: int) -> None:
        buf = self.data[handle]
        if length < len(buf):
            del buf[length:]
        else:
            buf.extend(bytes(length - len(buf)))

    def _read_crcs(self, handle: int, first: int, count: int) -> list[int]:
        return self.crcs[handle][first:first + count]

    def _write_crcs(self, handle: int, first: int, crcs: list[int]) -> None:
        table = self.crcs[handle]
        if len(table) < first:
            table.extend([0] * (first - len(table)))
        table[first:first + len(crcs)] = crcs

    def _set_crc_count(self, handle: int, count: int) -> None:
        del self.crcs[handle][count:]

    def _sync_files(self, handle: int) -> None:
        pass

    def _remove_files(self, handle: int) -> None:
        self.data.pop(handle, None)
        self.crcs.pop(handle, None)

    def _disk_space(self) -> tuple[int, int]:
        return self.capacity_bytes, self.capacity_bytes - self.used_bytes()
