"""The chunkd's HTTP face: routes over the objects that do the work.

Routes (messages as in :mod:`gfsfs.common.protocol.client_chunkd` and
:mod:`gfsfs.common.protocol.master_chunkd`):

- ``PUT /data/<data_id>``: push, buffered and forwarded down ``X-GFS-Chain``
  (:mod:`chunkd.mutations.push`).
- ``POST /rpc/commit`` (primary), ``/rpc/apply`` (secondary), ``/rpc/truncate``,
  ``/rpc/sync``, ``/rpc/set_version``, ``/rpc/delete``; ``/rpc/append`` (record
  append at the primary, which picks the offset): :mod:`chunkd.mutations.order`.
- ``POST /rpc/replicate``, ``/rpc/copy``, ``/rpc/set_versions``:
  :mod:`chunkd.services.replicate`, :mod:`chunkd.services.copy`.
- The master's orders (``set_version``, ``delete``, ``replicate``, ``copy``,
  ``set_versions``: :data:`ORDERS`) pass the epoch fence first
  (:class:`Fenced`, :meth:`ChunkServer.admit`, :mod:`chunkd.services.fence`):
  one of an older epoch than the highest seen is refused STALE, untouched.
- ``GET /chunk/<handle>?offset=&length=&version=``: verified raw bytes (a
  corrupt replica is reported and dropped: :mod:`chunkd.storage.replicas`).
- ``GET /status``: a msgpack summary (with the epoch and each master's state);
  ``GET /metrics``: :mod:`chunkd.api.metrics`.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import trio

from gfsfs.common.config import ChunkServerConfig
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import CHAIN_HEADER, PROTOCOL_VERSION
from gfsfs.common.auth.tokens import READ, WRITE, TokenKeys
from gfsfs.common.rpc import (CHUNK, OCTETS, App, Request, Response, RpcHandler, need, opt,
                              require_chunk, require_writer)

from chunkd.api import metrics as chunkd_metrics
from chunkd.mutations.order import Mutations
from chunkd.mutations.push import (PushBuffers, Reservation, check_data_id, parse_chain,
                                   receive_and_forward)
from chunkd.services.copy import copy_chunk, set_versions
from chunkd.services.fence import Fence
from chunkd.services.heartbeat import ChunkReports, Heartbeat
from chunkd.services.replicate import replicate
from chunkd.storage.replicas import Replicas
from chunkd.storage.store import ChunkStore, check_handle

log = logging.getLogger(__name__)

MAX_READ = (64 << 20) + (1 << 20)     # largest single GET /chunk (a chunk plus slack)
READ_PIECE = 4 << 20                  # reads up to this are answered from memory at once
# what only a master orders: each carries its epoch and passes the fence
ORDERS = ("set_version", "delete", "replicate", "copy", "set_versions")


class Fenced:
    """A master order's handler behind the epoch fence: ``fence(name, req)``
    reads the order's epoch (and refuses a stale one) before the handler
    (``__wrapped__``) runs."""

    def __init__(self, name: str, fence: Callable[[str, dict[str, Any]], Awaitable[None]],
                 handler: RpcHandler) -> None:
        self.name = name
        self.fence = fence
        self.__wrapped__ = handler

    async def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
        await self.fence(self.name, req)
        return await self.__wrapped__(req)


class ChunkServer:
    """One chunkd: its replicas, push buffers, mutations and routes."""

    def __init__(self, store: ChunkStore, cfg: ChunkServerConfig, http: httpx.AsyncClient,
                 server_id: str, addr: str = "", reports: ChunkReports | None = None,
                 fence: Fence | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.server_id = server_id
        self.addr = addr
        self.reports = reports if reports is not None else ChunkReports()
        self.fence = fence if fence is not None else Fence()
        self.masters: list[Heartbeat] = []      # one loop per master (set by main)
        self.buffers = PushBuffers(cfg.push_buffer_ttl, cfg.push_buffer_bytes,
                                   cfg.push_buffer_wait)
        self.replicas = Replicas(store, self.reports)
        self.mutations = Mutations(self.replicas, self.buffers, http, cfg.peer_timeout)
        self.reads = 0                # GET /chunk requests answered (for /status)
        self.local_opens = lambda: 0  # chunk files handed to short-circuit readers
        self.app = App("chunkd", max_raw_body=MAX_READ, body_timeout=cfg.body_timeout)
        # the cluster secret's chunk tokens (chunkd.main sets them; None: open cluster)
        self.tokens: TokenKeys | None = None
        self.app.route("PUT", "/data/", self.push, CHUNK)
        self.app.route("GET", "/chunk/", self.read, CHUNK)
        self.app.route("GET", "/status", self.status)
        chunkd_metrics.install(self)            # GET /metrics (Prometheus)
        m = self.mutations
        self.app.rpc("apply", m.apply)          # from the primary chunkd: signed
        for name, handler in (("commit", m.commit), ("append", m.append),
                              ("truncate", m.truncate), ("sync", m.sync)):
            self.app.rpc(name, self._token_gate(name, handler), CHUNK)
        orders: dict[str, RpcHandler] = {
            "set_version": m.set_version, "delete": m.delete,
            "replicate": lambda req: replicate(self.replicas, self.http, req),
            "copy": lambda req: copy_chunk(self.replicas, req),     # snapshot copy-on-write
            "set_versions": lambda req: set_versions(self.store, req)}     # snapshot
        for name in ORDERS:
            self.app.rpc(name, Fenced(name, self.admit, orders[name]))

    def _token_gate(self, name: str, handler: RpcHandler) -> RpcHandler:
        """A client's mutation RPC behind its chunk token: a write token for
        the request's chunk, at least at the version it writes (sync, which
        only flushes, takes any write token); a signed caller needs none."""
        async def gated(req: dict[str, Any]) -> dict[str, Any]:
            if name == "sync":
                require_writer(self.tokens)
            else:
                handle = check_handle(need(req, "handle", int))
                require_chunk(self.tokens, handle, WRITE, opt(req, "version", int))
            return await handler(req)
        gated.__wrapped__ = handler      # type: ignore[attr-defined]
        return gated

    async def admit(self, order: str, req: dict[str, Any]) -> None:
        """The epoch fence of every master order (absent epoch: 0): STALE
        if older than the highest seen; a newer one is kept on disk first."""
        epoch = opt(req, "epoch", int, 0)
        if epoch < 0:
            raise GFSError(Code.BADREQ, f"epoch {epoch}: must not be negative")
        await self.fence.admit(epoch, order)

    @property
    def http(self) -> httpx.AsyncClient:
        """The client for other chunkds (the push chain, secondaries, relays)."""
        return self.mutations.http

    @http.setter
    def http(self, http: httpx.AsyncClient) -> None:
        self.mutations.http = http

    # ------------------------------------------------------------ data plane

    async def push(self, req: Request) -> Response:
        """Reserve room for the body (waiting while the push buffers are full;
        EAGAIN after push_buffer_wait), then receive and forward it."""
        require_writer(self.tokens)
        data_id = check_data_id(req.path[len("/data/"):])
        chain = parse_chain(req.headers.get(CHAIN_HEADER, ""))
        length = req.content_length()
        if length is not None and length > req.max_body:
            raise GFSError(Code.TOOBIG, f"push of {length} bytes; at most {req.max_body}")
        reservation = self.buffers.reservation(hops=len(chain))
        try:
            if length is not None:
                await self._reserve(req, reservation, length)
            data, failure = await receive_and_forward(
                self.http, req.stream(), data_id, chain, timeout=self.cfg.peer_timeout or None,
                length=length, reservation=reservation)
            self.buffers.put(data_id, data, reservation)  # kept even if the chain failed
        finally:
            reservation.release()
        if failure is not None:
            raise failure
        return Response.msgpack({"length": len(data)})

    async def _reserve(self, req: Request, reservation: Reservation, length: int) -> None:
        """Room for the whole body before a byte of it is read. Refused
        (EAGAIN): the body is read and dropped first, so that the sender,
        still sending, gets the answer rather than a reset connection."""
        try:
            await reservation.grow(length)
        except GFSError:
            with trio.move_on_after(self.cfg.peer_timeout or 10.0):
                await req.drain(length)
            raise

    async def read(self, req: Request) -> Response:
        handle = _path_handle(req.path[len("/chunk/"):])
        require_chunk(self.tokens, handle, READ)      # before anything else is looked at
        offset, length = req.query_int("offset", 0), req.query_int("length")
        version = req.query_int("version", 0)
        if offset < 0 or length < 0:
            raise GFSError(Code.BADREQ, "offset and length must not be negative")
        if length > MAX_READ:
            raise GFSError(Code.TOOBIG, f"read of {length} bytes; at most {MAX_READ} at once")
        have = self.store.version(handle)
        if have is None:
            raise GFSError(Code.NOCHUNK, f"no chunk {handle:016x}")
        if have < version:
            raise GFSError(Code.STALE, f"chunk {handle:016x} is at version {have}, not {version}")
        self.reads += 1
        first = await self.replicas.read(handle, offset, min(length, READ_PIECE))
        total = max(0, min(offset + length, self.store.length(handle) or 0) - offset)
        if length <= READ_PIECE or total <= len(first):
            return Response(200, first, OCTETS)
        return Response(200, self._read_rest(handle, offset, total, first), OCTETS,
                        {"content-length": str(total)})

    async def _read_rest(self, handle: int, offset: int, total: int,
                         first: bytes) -> AsyncIterator[bytes]:
        """The pieces of a large read; one that fails ends the body short (the
        content-length tells the reader it did not get it all)."""
        yield first
        pos, end = offset + len(first), offset + total
        while pos < end:
            piece = await self.replicas.read(handle, pos, min(READ_PIECE, end - pos))
            if not piece:
                raise GFSError(Code.EIO, f"chunk {handle:016x} shrank during a read")
            yield piece
            pos += len(piece)

    async def status(self, req: Request) -> Response:
        cap, used, free = await trio.to_thread.run_sync(self.store.space)
        return Response.msgpack({
            "id": self.server_id, "addr": self.addr, "rack": self.cfg.rack,
            "protocol": PROTOCOL_VERSION, "chunks": self.store.count(),
            "capacity_bytes": cap, "used_bytes": used, "free_bytes": free,
            "push_buffers": len(self.buffers), "push_bytes": self.buffers.bytes,
            "push_reserved_bytes": self.buffers.reserved,
            "reads": self.reads, "local_opens": self.local_opens(),
            "fsyncs": self.store.fsyncs, "master_url": self.cfg.master_url,
            "epoch": self.fence.epoch, "primary_url": self.fence.primary_url,
            "stale_orders": self.fence.refused, "masters": [h.state() for h in self.masters]})


def _path_handle(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 19:
        raise GFSError(Code.BADREQ, f"bad chunk handle {text[:40]!r} in path")
    return check_handle(int(text))

