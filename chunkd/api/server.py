"""The chunkd's HTTP face: thin handlers over a :class:`ChunkStore`.

Routes (messages as in :mod:`gfsfs.common.protocol`):

- ``PUT /data/<data_id>``: push, buffered and forwarded down ``X-GFS-Chain``.
- ``POST /rpc/commit`` (primary), ``/rpc/apply`` (secondary), ``/rpc/truncate``,
  ``/rpc/sync``, ``/rpc/set_version``, ``/rpc/delete``; ``/rpc/append`` (record
  append at the primary, which picks the offset).
- ``GET /chunk/<handle>?offset=&length=&version=``: verified raw bytes.
- ``GET /status``: a msgpack summary.

Mutation order (GFS §3.1): the primary holds the chunk's *order lock* from the
moment it applies a mutation locally until every secondary has applied it, so
mutations of one chunk reach every replica in the primary's order
(:meth:`chunkd.storage.replicas.Replicas.order_lock`). The store's
own per-chunk lock only makes single operations atomic.

A CORRUPT replica is never served: it is reported to the master
(``report_chunks`` corrupt) and deleted here, so the master re-replicates it
(:mod:`chunkd.storage.replicas`).
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from gfsfs.common.config import ChunkServerConfig
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import BLOCK_SIZE, CHAIN_HEADER, INLINE_MAX, PROTOCOL_VERSION
from gfsfs.common.rpc import OCTETS, App, Request, Response, call, need, opt

from chunkd.api import metrics as chunkd_metrics
from chunkd.services.heartbeat import ChunkReports
from chunkd.services.replicate import replicate
from chunkd.services.copy import copy_chunk, set_versions
from chunkd.mutations.push import (PushBuffers, Reservation, check_addr, check_data_id, parse_chain, receive_and_forward)
from chunkd.storage.replicas import Replicas
from chunkd.storage.store import MAX_CHUNK_BYTES, ChunkStore, check_handle, check_version

log = logging.getLogger(__name__)

MAX_READ = (64 << 20) + (1 << 20)     # largest single GET /chunk (a chunk plus slack)
READ_PIECE = 4 << 20                  # reads up to this are answered from memory at once


@dataclass(frozen=True)
class Mutation:
    """The fields of a commit/apply. ``inline``: the bytes themselves, sent in
    the message instead of pushed under ``data_id`` (small record appends)."""
    handle: int
    version: int
    offset: int
    data_id: str
    sync: bool
    inline: bytes | None = None

    @classmethod
    def parse(cls, req: dict[str, Any]) -> Mutation:
        offset = need(req, "offset", int)
        if offset < 0:
            raise GFSError(Code.BADREQ, f"negative offset {offset}")
        inline = opt(req, "data", bytes)
        data_id = "" if inline is not None else check_data_id(need(req, "data_id", str))
        return cls(check_handle(need(req, "handle", int)), check_version(need(req, "version", int)),
                   offset, data_id, opt(req, "sync", bool, False), inline)

    def wire(self) -> dict[str, Any]:
        out = {"handle": self.handle, "version": self.version, "offset": self.offset,
               "data_id": self.data_id, "sync": self.sync}
        if self.inline is not None:
            out["data"] = self.inline
            del out["data_id"]
        return out


class ChunkServer:
    """One chunkd: its store, push buffers and routes."""

    def __init__(self, store: ChunkStore, cfg: ChunkServerConfig, http: httpx.AsyncClient,
                 server_id: str, addr: str = "", reports: ChunkReports | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.http = http
        self.server_id = server_id
        self.addr = addr
        self.reports = reports if reports is not None else ChunkReports()
        self.buffers = PushBuffers(cfg.push_buffer_ttl, cfg.push_buffer_bytes,
                                   cfg.push_buffer_wait)
        self.replicas = Replicas(store, self.reports)
        self.reads = 0                # GET /chunk requests answered (for /status)
        self.local_opens = lambda: 0  # chunk files handed to short-circuit readers
        self.app = App("chunkd", max_raw_body=MAX_READ, body_timeout=cfg.body_timeout)
        self.app.route("PUT", "/data/", self.push)
        self.app.route("GET", "/chunk/", self.read)
        self.app.route("GET", "/status", self.status)
        chunkd_metrics.install(self)            # GET /metrics (Prometheus)
        for name in ("commit", "apply", "truncate", "sync", "set_version", "delete"):
            self.app.rpc(name, getattr(self, "rpc_" + name))
        self.app.rpc("append", self.rpc_append)
        self.app.rpc("replicate", self.rpc_replicate)
        self.app.rpc("copy", lambda req: copy_chunk(self.replicas, req))   # snapshot copy-on-write
        self.app.rpc("set_versions", lambda req: set_versions(self.store, req))   # snapshot

    # ------------------------------------------------------------ data plane

    async def push(self, req: Request) -> Response:
        """Reserve room for the body (waiting while the push buffers are full;
        EAGAIN after push_buffer_wait), then receive and forward it."""
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
            "fsyncs": self.store.fsyncs, "master_url": self.cfg.master_url})

    # ------------------------------------------------------------ mutations

    async def rpc_commit(self, req: dict[str, Any]) -> dict[str, Any]:
        m = Mutation.parse(req)
        secondaries = _addrs(opt(req, "secondaries", list, []))
        if m.inline is not None and len(m.inline) > INLINE_MAX:
            raise GFSError(Code.BADREQ, f"inline data over {INLINE_MAX} bytes: push it")
        data = m.inline if m.inline is not None else self.buffers.get(m.data_id)
        async with self.replicas.order_lock(m.handle):
            await self._apply(m, data)
            self.reports.note_primary(m.handle)
            await self._fan_out(secondaries, "apply", m.wire())
        # every replica has it: the primary's copy is no longer needed (a commit
        # retried after this answers EAGAIN: push again). Secondaries keep theirs
        # until push_buffer_ttl (or until room is needed), as a retried commit
        # re-sends apply to them.
        if m.inline is None:
            self.buffers.discard(m.data_id)
        return {"length": len(data)}

    async def rpc_append(self, req: dict[str, Any]) -> dict[str, Any]:
        """Record append (GFS §3.3) at the primary: under the chunk's order lock
        the offset is this replica's chunk length (at least ``min_offset``); a
        record that does not fit pads the chunk to ``chunk_size`` on every
        replica and answers ``{"retry": "next_chunk"}``; otherwise the record
        is applied here and then at that offset on every secondary."""
        handle = check_handle(need(req, "handle", int))
        version = check_version(need(req, "version", int))
        inline = opt(req, "data", bytes)
        data_id = "" if inline is not None else check_data_id(need(req, "data_id", str))
        chunk_size = need(req, "chunk_size", int)
        if not 0 < chunk_size <= MAX_CHUNK_BYTES or chunk_size % BLOCK_SIZE:
            raise GFSError(Code.BADREQ, f"bad chunk_size {chunk_size}")
        min_offset = min(max(0, opt(req, "min_offset", int, 0)), chunk_size)
        sync = opt(req, "sync", bool, False)
        secondaries = _addrs(opt(req, "secondaries", list, []))
        data = inline if inline is not None else self.buffers.get(data_id)
        if not 0 < len(data) <= chunk_size // 4:
            raise GFSError(Code.EINVAL,
                           f"a record is 1 to {chunk_size // 4} bytes, not {len(data)}")
        async with self.replicas.order_lock(handle):
            have = self.store.version(handle)
            if have is None:
                raise GFSError(Code.NOCHUNK, f"no chunk {handle:016x}")
            if have != version:
                raise GFSError(Code.STALE,
                               f"chunk {handle:016x} is at version {have}, not {version}")
            length = self.store.length(handle) or 0
            offset = max(length, min_offset)
            if offset + len(data) > chunk_size:
                padded = max(0, chunk_size - length)
                if padded:
                    await self.replicas.guard(handle, self.store.truncate(
                        handle, chunk_size, expect_version=version))
                # the secondaries too, even when this replica was full already
                # (a secondary may have missed an earlier padding)
                await self._fan_out(secondaries, "truncate", {
                    "handle": handle, "version": version, "length": chunk_size})
                return {"retry": "next_chunk", "padded": padded}
            m = Mutation(handle, version, offset, data_id, sync, inline)
            await self._apply(m, data)
            self.reports.note_primary(handle)
            await self._fan_out(secondaries, "apply", m.wire())
        if inline is None:
            self.buffers.discard(data_id)
        return {"offset": offset, "length": len(data)}

    async def rpc_apply(self, req: dict[str, Any]) -> dict[str, Any]:
        m = Mutation.parse(req)
        data = m.inline if m.inline is not None else self.buffers.get(m.data_id)
        async with self.replicas.order_lock(m.handle):
            await self._apply(m, data)
        if m.inline is None:
            self.buffers.mark_used(m.data_id)   # kept for a retry, but first to go
        return {"length": len(data)}

    async def rpc_truncate(self, req: dict[str, Any]) -> dict[str, Any]:
        handle = check_handle(need(req, "handle", int))
        version = check_version(need(req, "version", int))
        length = need(req, "length", int)
        secondaries = _addrs(opt(req, "secondaries", list, []))
        async with self.replicas.order_lock(handle):
            await self.replicas.guard(handle, self.store.truncate(handle, length, expect_version=version))
            await self._fan_out(secondaries, "truncate",
                                {"handle": handle, "version": version, "length": length})
        return {}

    async def rpc_sync(self, req: dict[str, Any]) -> dict[str, Any]:
        relay = opt(req, "relay", str)
        if relay is not None:       # for a client that cannot reach that chunkd itself
            return await call(self.http, check_addr(relay), "sync",
                              {"handles": _handles(need(req, "handles", list))},
                              timeout=self.cfg.peer_timeout or None)
        for h in _handles(need(req, "handles", list)):
            await self.store.sync(h)
        return {}

    async def rpc_set_version(self, req: dict[str, Any]) -> dict[str, Any]:
        handle = check_handle(need(req, "handle", int))
        version = check_version(need(req, "version", int))
        if opt(req, "create", bool, False):
            data = opt(req, "data", bytes, b"")
            if len(data) > INLINE_MAX:
                raise GFSError(Code.TOOBIG, f"{len(data)} bytes in a create; at most {INLINE_MAX}")
            # the first write of a new chunk may ride on its creation
            await self.store.create(handle, version, opt(req, "offset", int, 0), data)
            if data and opt(req, "sync", bool, False):
                try:
                    await self.store.sync(handle)
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await self.store.delete(handle)     # no replica without its bytes
                    raise
            self.reports.add(handle, version)
        else:
            await self.store.set_version(handle, version)
        return {}

    async def rpc_replicate(self, req: dict[str, Any]) -> dict[str, Any]:
        """Fetch a chunk from another chunkd (master -> target; see chunkd.services.replicate)."""
        return await replicate(self.replicas, self.http, req)

    async def rpc_delete(self, req: dict[str, Any]) -> dict[str, Any]:
        await self.replicas.delete(_handles(need(req, "handles", list)))
        return {}

    async def _apply(self, m: Mutation, data: bytes) -> None:
        await self.replicas.guard(m.handle, self.store.write(m.handle, m.offset, data,
                                                     expect_version=m.version))
        if m.sync:
            await self.store.sync(m.handle)

    async def _fan_out(self, addrs: list[str], name: str, body: dict[str, Any]) -> None:
        """``name`` on every secondary at once; UNAVAILABLE naming those that failed."""
        failed: list[str] = []
        full: list[str] = []

        async def one(addr: str) -> None:
            try:
                await call(self.http, addr, name, body, timeout=self.cfg.peer_timeout or None)
            except GFSError as exc:
                failed.append(f"{addr} ({exc})")
                if exc.code == Code.ENOSPC:
                    full.append(addr)
            except Exception as exc:
                log.exception("%s at %s failed", name, addr)
                failed.append(f"{addr} ({type(exc).__name__}: {exc})")

        async with trio.open_nursery() as nursery:
            for addr in addrs:
                nursery.start_soon(one, addr)
        if full:            # out of space is no reason to retry: the writer gets ENOSPC
            raise GFSError(Code.ENOSPC,
                           f"{name} failed on secondaries: {'; '.join(sorted(failed))}")
        if failed:
            raise GFSError(Code.UNAVAILABLE,
                           f"{name} failed on secondaries: {'; '.join(sorted(failed))}")


def _path_handle(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 19:
        raise GFSError(Code.BADREQ, f"bad chunk handle {text[:40]!r} in path")
    return check_handle(int(text))


def _handles(items: list[Any]) -> list[int]:
    return [check_handle(h) for h in items]


def _addrs(items: list[Any]) -> list[str]:
    return [check_addr(a) for a in items]

