"""The client's side of short-circuit local reads (see gfsfs/common/shortcircuit.py).

:class:`LocalReads` asks a chunkd on this host for a chunk's files once, keeps
the two descriptors for a while (``ttl`` seconds, at most ``max_open`` chunks)
and reads them in worker threads, checking the version in the meta header and
every block's CRC32C on each read. When a replica is not on this host, its
chunkd refuses, or the files cannot vouch for the bytes, :meth:`LocalReads.read`
answers None and the caller reads over HTTP as usual.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from gfsfs.common.errors import GFSError
from gfsfs.common.shortcircuit import (FRAME, MAX_MESSAGE, Mismatch, pack, read_verified, socket_name, unpack)

if TYPE_CHECKING:
    from gfsfs.client.types import ChunkLoc, Replica

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
NOT_LOCAL_RETRY = 5.0         # seconds before asking a non-local address again


class NotLocal(Exception):
    """No chunkd of that address answers on this host."""


@dataclass
class Opened:
    """A chunk's files as handed over by its chunkd, and the connection that
    stays open while we may use them; closed once evicted and unused."""
    sock: socket.socket
    data_fd: int
    meta_fd: int
    version: int
    expires: float
    users: int = 0
    evicted: bool = False

    def held(self) -> bool:
        """False once the chunkd closed the connection (it died, or the chunk
        was deleted there)."""
        try:
            return self.sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    def close_if_done(self) -> None:
        if self.evicted and self.users == 0 and self.data_fd >= 0:
            os.close(self.data_fd)
            os.close(self.meta_fd)
            self.sock.close()
            self.data_fd = self.meta_fd = -1


class LocalReads:
    def __init__(self, enabled: bool, max_open: int = 64, ttl: float = 10.0) -> None:
        self.enabled = enabled
        self.max_open = max_open
        self.ttl = ttl
        self.local: dict[str, bool] = {}        # addr -> its chunkd answers on this host
        self.retry_at: dict[str, float] = {}    # addr -> when to ask a non-local one again
        self.files: OrderedDict[tuple[str, int], Opened] = OrderedDict()
        self.reads = 0                          # reads served from local files
        self.fallbacks = 0                      # local reads handed back to HTTP

    def rank(self, addr: str) -> int:
        """0 for a replica known to be on this host, 1 unknown, 2 remote."""
        if not self.enabled:
            return 1
        known = self.local.get(addr)
        return 1 if known is None else (0 if known else 2)

    async def read(self, rep: Replica, loc: ChunkLoc, offset: int, length: int) -> bytes | None:
        """At most ``length`` verified bytes of the chunk from this host's
        replica files, or None when the caller should read over HTTP."""
        if not self.enabled or time.monotonic() < self.retry_at.get(rep.addr, 0.0):
            return None
        opened = await self._opened(rep, loc)
        if opened is None:
            return None
        opened.users += 1
        try:
            data = await trio.to_thread.run_sync(read_verified, opened.data_fd, opened.meta_fd,
                                                 loc.version, offset, length)
        except (Mismatch, OSError) as exc:
            log.debug("local read of chunk %d at %s: %s; reading over HTTP",
                      loc.handle, rep.addr, exc)
            self.fallbacks += 1
            self._evict((rep.addr, loc.handle))
            return None
        finally:
            opened.users -= 1
            opened.close_if_done()
        self.reads += 1
        return data

    async def _opened(self, rep: Replica, loc: ChunkLoc) -> Opened | None:
        key = (rep.addr, loc.handle)
        opened = self.files.get(key)
        if (opened is not None and opened.version >= loc.version
                and opened.expires > time.monotonic() and opened.held()):
            self.files.move_to_end(key)
            return opened
        self._evict(key)
        try:
            opened = await trio.to_thread.run_sync(self._open, rep, loc)
        except NotLocal as exc:
            log.debug("%s is not on this host (%s)", rep.addr, exc)
            self.local[rep.addr] = False
            self.retry_at[rep.addr] = time.monotonic() + NOT_LOCAL_RETRY
            return None
        except GFSError as exc:          # STALE, NOCHUNK, ...: the HTTP read will say so
            log.debug("chunkd %s will not open chunk %d: %s", rep.addr, loc.handle, exc)
            return None
        self.local[rep.addr] = True
        self._evict(key)                 # a concurrent reader may have opened it meanwhile
        self.files[key] = opened
        while len(self.files) > self.max_open:
            self._evict(next(iter(self.files)))
        return opened

    def _open(self, rep: Replica, loc: ChunkLoc) -> Opened:
        """Ask the chunkd for the chunk's files (blocking; in a worker thread)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(CONNECT_TIMEOUT)
        fds: list[int] = []
        try:
            try:
                sock.connect(socket_name(rep.addr))
                request: dict[str, object] = {"handle": loc.handle, "version": loc.version}
                if loc.token:
                    request["token"] = loc.token
                sock.sendall(pack(request))
                msg, fds, _flags, _ = socket.recv_fds(sock, FRAME.size + MAX_MESSAGE, 2,
                                                      socket.MSG_CMSG_CLOEXEC)
            except OSError as exc:
                raise NotLocal(str(exc)) from None
            reply = unpack(msg)
            if "code" in reply:
                raise GFSError(str(reply["code"]), str(reply.get("message", "")))
            if len(fds) != 2 or (rep.id and reply.get("id") != rep.id):
                raise NotLocal(f"answered by chunkd {reply.get('id')!r}, not {rep.id!r}")
            sock.setblocking(False)       # for Opened.held()
            version = int(reply["version"])  # type: ignore[call-overload]
            return Opened(sock, fds[0], fds[1], version, time.monotonic() + self.ttl)
        except BaseException:
            for fd in fds:
                os.close(fd)
            sock.close()
            raise

    def _evict(self, key: tuple[str, int]) -> None:
        opened = self.files.pop(key, None)
        if opened is not None:
            opened.evicted = True
            opened.close_if_done()

    def close(self) -> None:
        for key in list(self.files):
            self._evict(key)
