"""Chunks on disk: the :class:`ChunkStore` primitives over files.

In the server dir, ``<handle:016x>.chunk`` holds a chunk's data and
``<handle:016x>.meta`` a header (magic ``GFSC``, format, chunk version as
``<4sIQ``) followed by one little-endian u32 CRC32C per 64 KiB block. Creating
a chunk does not fsync; a version change fsyncs the meta file, and ``sync``
both files (each also fsyncs the directory when chunks were created since).
Every primitive runs in a worker thread (see :meth:`DiskChunkStore._io`).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from gfsfs.common.errors import from_oserror
from gfsfs.common.protocol import META_FORMAT, META_HEADER, META_MAGIC

from chunkd.storage.store import MAX_HANDLE, ChunkInfo, ChunkStore

log = logging.getLogger(__name__)

_NAME = re.compile(r"^([0-9a-f]{16})\.meta$")

T = TypeVar("T")


class DiskChunkStore(ChunkStore):
    """Chunks as files in ``root`` (the server dir); call :meth:`open` first."""

    def __init__(self, root: str | Path, capacity_bytes: int = 0, reserve_bytes: int = 0) -> None:
        super().__init__(capacity_bytes, reserve_bytes)
        self.root = Path(root)
        self._dir_dirty = False      # chunks created since the directory was last fsync'd

    async def open(self) -> None:
        """Load the chunk index (handle, version, length) from the directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._chunks = await trio.to_thread.run_sync(self._scan)
        log.info("%s: %d chunks, %d bytes", self.root, len(self._chunks), self.used_bytes())

    def _scan(self) -> dict[int, ChunkInfo]:
        chunks: dict[int, ChunkInfo] = {}
        for entry in os.scandir(self.root):
            m = _NAME.match(entry.name)
            if not m:
                continue
            handle = int(m.group(1), 16)
            try:
                with open(entry.path, "rb") as f:
                    magic, fmt, version = META_HEADER.unpack(f.read(META_HEADER.size))
                length = os.stat(self._data_path(handle)).st_size
            except (OSError, struct.error) as exc:
                log.error("chunk %016x: unreadable, ignored: %s", handle, exc)
                continue
            if magic != META_MAGIC or fmt != META_FORMAT or handle >= MAX_HANDLE:
                log.error("chunk %016x: bad meta header, ignored", handle)
                continue
            chunks[handle] = ChunkInfo(version, length)
        return chunks

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args)

    def _data_path(self, handle: int) -> str:
        return os.path.join(self.root, f"{handle:016x}.chunk")

    def _meta_path(self, handle: int) -> str:
        return os.path.join(self.root, f"{handle:016x}.meta")

    def _create_files(self, handle: int, version: int) -> None:
        # not fsync'd here: a new chunk holds nothing a client was promised yet.
        # Its files and directory entries reach the disk with its first sync
        # or version change; a crash before that leaves no chunk or a torn one,
        # which _scan ignores (a missing replica, as for any unsynced write).
        try:
            for path, content in ((self._data_path(handle), b""),
                                  (self._meta_path(handle), META_HEADER.pack(META_MAGIC, META_FORMAT, version))):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    _pwrite_all(fd, content, 0)
                finally:
                    os.close(fd)
            self._dir_dirty = True
        except OSError as exc:
            self._remove_files(handle)
            raise from_oserror(exc) from None

    def _sync_dir(self) -> None:
        """fsync the directory if a chunk was created since the last time."""
        if self._dir_dirty:
            self._dir_dirty = False
            _fsync_dir(self.root)

    def _write_version(self, handle: int, version: int) -> None:
        fd = os.open(self._meta_path(handle), os.O_WRONLY)
        try:
            _pwrite_all(fd, META_HEADER.pack(META_MAGIC, META_FORMAT, version), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._sync_dir()

    def _pread(self, handle: int, offset: int, length: int) -> bytes:
        fd = os.open(self._data_path(handle), os.O_RDONLY)
        try:
            return _pread_all(fd, length, offset)
        finally:
            os.close(fd)

    def _pwrite(self, handle: int, offset: int, data: bytes) -> None:
        fd = os.open(self._data_path(handle), os.O_WRONLY)
        try:
            _pwrite_all(fd, data, offset)
        finally:
            os.close(fd)

    def _set_length(self, handle: int, length: int) -> None:
        os.truncate(self._data_path(handle), length)

    def _read_crcs(self, handle: int, first: int, count: int) -> list[int]:
        fd = os.open(self._meta_path(handle), os.O_RDONLY)
        try:
            raw = _pread_all(fd, 4 * count, META_HEADER.size + 4 * first)
        finally:
            os.close(fd)
        n = len(raw) // 4
        return list(struct.unpack(f"<{n}I", raw[:4 * n]))

    def _write_crcs(self, handle: int, first: int, crcs: list[int]) -> None:
        if not crcs:
            return
        fd = os.open(self._meta_path(handle), os.O_WRONLY)
        try:
            _pwrite_all(fd, struct.pack(f"<{len(crcs)}I", *crcs), META_HEADER.size + 4 * first)
        finally:
            os.close(fd)

    def _set_crc_count(self, handle: int, count: int) -> None:
        os.truncate(self._meta_path(handle), META_HEADER.size + 4 * count)

    def _sync_files(self, handle: int) -> None:
        for path in (self._data_path(handle), self._meta_path(handle)):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._sync_dir()

    def open_for_reading(self, handle: int) -> list[int]:
        """Read-only descriptors of the chunk's data and meta files (for a
        short-circuit reader, who verifies the checksums itself)."""
        fds: list[int] = []
        try:
            for path in (self._data_path(handle), self._meta_path(handle)):
                fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            raise from_oserror(exc) from None
        return fds

    def _remove_files(self, handle: int) -> None:
        for path in (self._data_path(handle), self._meta_path(handle)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _disk_space(self) -> tuple[int, int]:
        st = os.statvfs(self.root)
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    parts: list[bytes] = []
    while length > 0:
        piece = os.pread(fd, length, offset)
        if not piece:
            break
        parts.append(piece)
        offset += len(piece)
        length -= len(piece)
    return b"".join(parts)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.ENOSPC, "short write")
        view, offset = view[n:], offset + n


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
