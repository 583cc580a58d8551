"""The chunkd's side of short-circuit local reads (see gfsfs/common/shortcircuit.py).

:meth:`ShortCircuitServer.serve` listens on the abstract Unix socket named
after this chunkd's HTTP address and, for each connection from root or from
our own uid, answers one request with the chunk's data and meta file
descriptors. The connection then stays open while the client holds them: when
the chunk is deleted here (garbage, stale, corrupt) the chunkd closes it, and
when the chunkd dies the kernel does, so the client stops reading those files
(the way HDFS revokes its short-circuit slots). A request that is not
understood gets ``{"code", "message"}`` and the connection closes; nothing a
peer sends can stop the listener.
"""
from __future__ import annotations

import array
import logging
import os
import socket
import struct
from typing import Any

import trio

from gfsfs.common.auth.tokens import READ, TokenKeys
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.shortcircuit import FRAME, MAX_MESSAGE, pack, socket_name, unpack

from chunkd.storage.diskstore import DiskChunkStore
from chunkd.storage.store import check_handle, check_version

log = logging.getLogger(__name__)

UCRED = struct.Struct("3i")        # pid, uid, gid (SO_PEERCRED)
REQUEST_TIMEOUT = 5.0


class ShortCircuitServer:
    def __init__(self, store: DiskChunkStore, server_id: str,
                 tokens: TokenKeys | None = None) -> None:
        self.store = store
        self.tokens = tokens        # a read token for the chunk is required (None: open cluster)
        self.server_id = server_id
        self.opens = 0              # descriptors handed out (status, metrics)
        self.holders: dict[int, set[trio.CancelScope]] = {}   # handle -> open connections
        store.on_delete.append(self.revoke)

    def revoke(self, handle: int) -> None:
        """Close every connection holding ``handle``'s files."""
        for scope in self.holders.pop(handle, set()):
            scope.cancel()

    async def serve(self, addr: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; reports started once listening (or when the
        name is taken by another process, in which case it does nothing)."""
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(socket_name(addr))
        except OSError as exc:
            log.warning("short-circuit reads off: cannot bind %r: %s", socket_name(addr), exc)
            sock.close()
            task_status.started()
            return
        sock.listen(64)
        log.info("short-circuit reads on %r", socket_name(addr))
        task_status.started()
        with sock:
            async with trio.open_nursery() as nursery:
                while True:
                    conn, _ = await sock.accept()
                    nursery.start_soon(self._handle, conn)

    async def _handle(self, conn: trio.socket.SocketType) -> None:
        with conn:
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    handle = await self._answer(conn)
                if handle is not None:
                    await self._hold(conn, handle)
            except (OSError, trio.TooSlowError) as exc:
                log.debug("short-circuit connection: %s", exc)

    async def _hold(self, conn: trio.socket.SocketType, handle: int) -> None:
        """Wait until the client lets go, or :meth:`revoke` cancels us."""
        with trio.CancelScope() as scope:
            self.holders.setdefault(handle, set()).add(scope)
            try:
                if self.store.version(handle) is None:     # deleted while we answered
                    return
                while await conn.recv(64):
                    pass
            finally:
                held = self.holders.get(handle)
                if held is not None:
                    held.discard(scope)
                    if not held:
                        del self.holders[handle]

    async def _answer(self, conn: trio.socket.SocketType) -> int | None:
        """Send the files (and return the handle) or an error (and None)."""
        fds: list[int] = []
        try:
            raw = await _receive_message(conn)    # first, so a refusal is not a broken pipe
            self._check_peer(conn)
            req = unpack(raw)
            if not isinstance(req, dict):
                raise GFSError(Code.BADREQ, "a short-circuit request is a map")
            handle = check_handle(req.get("handle"))
            version = check_version(req.get("version"))
            if self.tokens is not None:
                token = req.get("token")
                self.tokens.check(token if isinstance(token, str) else None, handle, READ)
            have = self.store.version(handle)
            if have is None:
                raise GFSError(Code.NOCHUNK, f"no chunk {handle:016x}")
            if have < version:
                raise GFSError(Code.STALE, f"chunk {handle:016x} is at version {have}, not {version}")
            fds = await trio.to_thread.run_sync(self.store.open_for_reading, handle)
            reply = pack({"id": self.server_id, "version": have})
            await conn.sendmsg([reply], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                          array.array("i", fds))])
            self.opens += 1
            return handle
        except GFSError as exc:
            await conn.send(pack({"code": exc.code, "message": exc.message}))
            return None
        finally:
            for fd in fds:
                os.close(fd)

    def _check_peer(self, conn: trio.socket.SocketType) -> None:
        _pid, uid, _gid = UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                       UCRED.size))
        if uid not in (0, os.getuid()):
            raise GFSError(Code.EACCES, f"uid {uid} may not read chunk files")


async def _receive_message(conn: trio.socket.SocketType) -> bytes:
    """One framed message (length prefix first, then exactly that much)."""
    data, need = b"", FRAME.size
    while len(data) < need:
        more = await conn.recv(need - len(data))
        if not more:
            raise GFSError(Code.BADREQ, "short-circuit request cut short")
        data += more
        if need == FRAME.size and len(data) == FRAME.size:
            (n,) = FRAME.unpack(data)
            if n > MAX_MESSAGE:
                raise GFSError(Code.BADREQ, "short-circuit request too long")
            need += n
    return data
