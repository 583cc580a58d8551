"""The file object of the public client API: :class:`RawFile`, an
``io.RawIOBase`` over one open gfsfs file, which :meth:`gfsfs.client.api.GFS.open`
wraps in ``io.BufferedReader``/``BufferedWriter``/``BufferedRandom`` (and
``io.TextIOWrapper`` for text modes) as the built-in ``open`` does.

Every call on a RawFile is one request to the handle's trio thread (a read of
``n`` bytes is one :meth:`gfsfs.client.core.Client.read`, with the client's
read-ahead for sequential readers; writes go into the client's write buffer,
sent in batches of ``upload_chunk_size``). ``flush`` sends what is buffered and
extends the file at the master (other clients then see it); ``close`` does the
same (close-to-open, as on a mount). In append mode every ``write`` is a GFS
record append (:meth:`gfsfs.client.api_ops.Ops.append`), as on an O_APPEND file of a
mount: the position is ignored and moves to the end of the last record.
"""
from __future__ import annotations

import errno
import io
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from gfsfs.client.api_ops import Mode, Stat
from gfsfs.client.core import OpenFile

if TYPE_CHECKING:
    from gfsfs.client.api import GFS

T = TypeVar("T")
Buffer = bytes | bytearray | memoryview


class RawFile(io.RawIOBase):
    def __init__(self, fs: GFS, st: Stat, of: OpenFile, mode: Mode, mode_text: str) -> None:
        super().__init__()
        self._fs = fs
        self._of = of
        self._mode = mode
        self._ino = st.ino
        self._pos = st.size if mode.append else 0
        self._released = False
        self.name = st.path
        self.mode = mode_text

    def __repr__(self) -> str:
        return f"<gfsfs.RawFile {self.name!r} mode={self.mode!r}>"

    def readable(self) -> bool:
        return self._mode.read

    def writable(self) -> bool:
        return self._mode.write

    def seekable(self) -> bool:
        return True

    def _check(self, want: bool, what: str) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if not want:
            raise io.UnsupportedOperation(f"file not open for {what}")

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self._fs._call(fn, *args, path=self.name)

    # ------------------------------------------------------------ reading

    def read(self, size: int | None = -1) -> bytes:
        self._check(self._mode.read, "reading")
        if size is None or size < 0:
            return self.readall()
        data = self._call(self._fs._client.read, self._ino, self._pos, size, self._of)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        self._check(self._mode.read, "reading")
        size = self._call(self._fs._client.file_size, self._ino)
        return self.read(size - self._pos) if size > self._pos else b""

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    # ------------------------------------------------------------ writing

    def write(self, buffer: Buffer) -> int:
        self._check(self._mode.write, "writing")
        data = bytes(buffer)          # the caller may reuse its buffer at once
        if not data:
            return 0
        if self._mode.append:
            self._pos = self._call(self._fs._ops.append, self._ino, data)
        else:
            self._call(self._fs._client.write, self._ino, self._pos, data)
            self._pos += len(data)
        return len(data)

    def truncate(self, size: int | None = None) -> int:
        self._check(self._mode.write, "writing")
        size = self._pos if size is None else size
        if size < 0:
            raise ValueError(f"negative size {size}")
        self._call(self._fs._client.truncate, self._ino, size)
        return size

    def flush(self) -> None:
        if self.closed or self._released or not self._mode.write:
            return
        self._call(self._fs._client.flush, self._ino)

    def fsync(self) -> None:
        """Written back and fsync(2)'d on every replica."""
        self._check(self._mode.write, "writing")
        self._call(self._fs._client.fsync, self._ino)

    # ------------------------------------------------------------ position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self._call(self._fs._client.file_size, self._ino) + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(errno.EINVAL, "negative position", self.name)
        self._pos = pos
        return pos

    def tell(self) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        return self._pos

    @property
    def size(self) -> int:
        """The file's size as this client knows it (its own writes included)."""
        return int(self._call(self._fs._client.file_size, self._ino))

    def close(self) -> None:
        """Write back what is buffered (errors raise here, as from close(2))."""
        if self.closed:
            return
        try:
            if not self._released and not self._fs.closed:
                self._released = True
                self._call(self._fs._client.release, self._of)
        finally:
            super().close()
