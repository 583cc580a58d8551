"""Mutations of chunk replicas (GFS §3.1, §3.3): the primary, its secondaries,
the mutation order, record append.

:class:`Mutations` does what the ``commit``, ``apply``, ``append``,
``truncate``, ``sync``, ``set_version`` and ``delete`` RPCs ask (messages as in
:mod:`gfsfs.common.protocol.client_chunkd` and ``master_chunkd``;
:mod:`chunkd.api.server` only routes them here):

- ``commit``: this chunkd is the primary. It applies the mutation to its own
  replica, then sends ``apply`` with the same offset to every secondary at
  once (:meth:`Mutations.fan_out`); one that fails is named in UNAVAILABLE
  (ENOSPC when a secondary is out of space), and the writer retries.
- ``apply``: this chunkd is a secondary, told by the primary.
- ``append``: record append at the primary, which picks the offset (this
  replica's chunk length). A record that does not fit pads the chunk on every
  replica and the writer moves on to the next chunk.

Mutation order (GFS §3.1): the primary holds the chunk's *order lock*
(:meth:`chunkd.storage.replicas.Replicas.order_lock`) from the moment it
applies a mutation locally until every secondary has applied it, so mutations
of one chunk reach every replica in the primary's order. The store's own
per-chunk lock only makes single operations atomic.
"""
from __future__ import annotations

import dataclasses
import logging
import zlib
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import BLOCK_SIZE, INLINE_MAX
from gfsfs.common.rpc import call, need, opt

from chunkd.mutations.push import PushBuffers, check_addr, check_data_id
from chunkd.mutations.records import Applied, RecordMemory
from chunkd.storage.replicas import Replicas
from chunkd.storage.store import MAX_CHUNK_BYTES, check_handle, check_version

log = logging.getLogger(__name__)


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
    record_id: int = 0              # a record append's (chunkd.mutations.records); 0: none

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
        if self.record_id:
            out["record_id"] = self.record_id
        if self.inline is not None:
            out["data"] = self.inline
            del out["data_id"]
        return out


@dataclass(frozen=True)
class Append:
    """The fields of a record append (``data``: the record, inline or pushed)."""
    handle: int
    version: int
    data_id: str
    inline: bytes | None
    chunk_size: int
    min_offset: int
    sync: bool
    secondaries: list[str]
    record_id: int = 0              # the same for every attempt of one record (0: none)

    @classmethod
    def parse(cls, req: dict[str, Any]) -> Append:
        handle = check_handle(need(req, "handle", int))
        version = check_version(need(req, "version", int))
        inline = opt(req, "data", bytes)
        data_id = "" if inline is not None else check_data_id(need(req, "data_id", str))
        chunk_size = need(req, "chunk_size", int)
        if not 0 < chunk_size <= MAX_CHUNK_BYTES or chunk_size % BLOCK_SIZE:
            raise GFSError(Code.BADREQ, f"bad chunk_size {chunk_size}")
        min_offset = min(max(0, opt(req, "min_offset", int, 0)), chunk_size)
        sync = opt(req, "sync", bool, False)
        secondaries = check_addrs(opt(req, "secondaries", list, []))
        return cls(handle, version, data_id, inline, chunk_size, min_offset, sync, secondaries,
                   _record_id(req))


def _record_id(req: dict[str, Any]) -> int:
    rid = opt(req, "record_id", int, 0)
    if not 0 <= rid < 1 << 63:
        raise GFSError(Code.BADREQ, "record_id must be 0..2**63-1")
    return rid


class Mutations:
    """The mutation RPCs over ``replicas``: pushed data from ``buffers``,
    secondaries reached through ``http`` (each call at most ``peer_timeout``
    seconds; 0: no limit)."""

    def __init__(self, replicas: Replicas, buffers: PushBuffers, http: httpx.AsyncClient,
                 peer_timeout: float) -> None:
        self.replicas = replicas
        self.store = replicas.store
        self.reports = replicas.reports
        self.buffers = buffers
        self.http = http
        self.peer_timeout = peer_timeout
        self.records = RecordMemory()

    async def commit(self, req: dict[str, Any]) -> dict[str, Any]:
        """At the primary: apply here, then on every secondary, in this order."""
        m = Mutation.parse(req)
        secondaries = check_addrs(opt(req, "secondaries", list, []))
        if m.inline is not None and len(m.inline) > INLINE_MAX:
            raise GFSError(Code.BADREQ, f"inline data over {INLINE_MAX} bytes: push it")
        data = m.inline if m.inline is not None else self.buffers.get(m.data_id)
        async with self.replicas.order_lock(m.handle):
            await self.apply_local(m, data)
            self.reports.note_primary(m.handle)
            await self.fan_out(secondaries, "apply", m.wire())
        # every replica has it: the primary's copy is no longer needed (a commit
        # retried after this answers EAGAIN: push again). Secondaries keep theirs
        # until push_buffer_ttl (or until room is needed), as a retried commit
        # re-sends apply to them.
        if m.inline is None:
            self.buffers.discard(m.data_id)
        return {"length": len(data)}

    async def append(self, req: dict[str, Any]) -> dict[str, Any]:
        """Record append (GFS §3.3) at the primary: under the chunk's order lock
        the offset is this replica's chunk length (at least ``min_offset``); a
        record that does not fit pads the chunk to ``chunk_size`` on every
        replica and answers ``{"retry": "next_chunk"}``; otherwise the record
        is applied here and then at that offset on every secondary."""
        a = Append.parse(req)
        data = a.inline if a.inline is not None else self.buffers.get(a.data_id)
        if not 0 < len(data) <= a.chunk_size // 4:
            raise GFSError(Code.EINVAL,
                           f"a record is 1 to {a.chunk_size // 4} bytes, not {len(data)}")
        async with self.replicas.order_lock(a.handle):
            have = self.store.version(a.handle)
            if have is None:
                raise GFSError(Code.NOCHUNK, f"no chunk {a.handle:016x}")
            if have != a.version:
                raise GFSError(Code.STALE,
                               f"chunk {a.handle:016x} is at version {have}, not {a.version}")
            length = self.store.length(a.handle) or 0
            seen = self.records.find(a.handle, a.record_id, data, length) \
                if a.record_id else None
            if seen is not None and await self._still_here(a.handle, a.record_id, seen):
                return await self._again(a, seen.offset, data)   # a retry: not twice
            offset = max(length, a.min_offset)
            if offset + len(data) > a.chunk_size:
                return await self._pad(a, length)
            m = Mutation(a.handle, a.version, offset, a.data_id, a.sync, a.inline, a.record_id)
            await self.apply_local(m, data)
            self.reports.note_primary(a.handle)
            await self.fan_out(a.secondaries, "apply", m.wire())
        if a.inline is None:
            self.buffers.discard(a.data_id)
        return {"offset": offset, "length": len(data)}

    async def _still_here(self, handle: int, record_id: int, seen: Applied) -> bool:
        """Whether this replica still holds the remembered record's bytes: a
        record of a failed attempt may have been written over since (another
        primary, which never had it, appended another record there) or the
        replica replaced by a copy; then the retry is a new record."""
        here = await self.replicas.read(handle, seen.offset, seen.length)
        if zlib.crc32(here) == seen.crc:
            return True
        self.records.drop(handle, record_id)
        return False

    async def _again(self, a: Append, offset: int, data: bytes) -> dict[str, Any]:
        """A record this replica applied at ``offset`` already: the same bytes
        at the same offset on every secondary (those that have them write
        them again), and the first answer; called under the order lock."""
        self.records.repeats += 1
        m = Mutation(a.handle, a.version, offset, a.data_id, a.sync, a.inline, a.record_id)
        if a.sync:
            await self.store.sync(a.handle)
        self.reports.note_primary(a.handle)
        await self.fan_out(a.secondaries, "apply", m.wire())
        if a.inline is None:
            self.buffers.discard(a.data_id)
        log.info("record %x of chunk %016x retried: already at offset %d, not appended again",
                 a.record_id, a.handle, offset)
        return {"offset": offset, "length": len(data)}

    async def _pad(self, a: Append, length: int) -> dict[str, Any]:
        """The record does not fit: pad the chunk (``length`` bytes here) to
        ``chunk_size`` on every replica; called under the order lock."""
        padded = max(0, a.chunk_size - length)
        if padded:
            await self.replicas.guard(a.handle, self.store.truncate(
                a.handle, a.chunk_size, expect_version=a.version))
        # the secondaries too, even when this replica was full already
        # (a secondary may have missed an earlier padding)
        await self.fan_out(a.secondaries, "truncate", {
            "handle": a.handle, "version": a.version, "length": a.chunk_size})
        return {"retry": "next_chunk", "padded": padded}

    async def apply(self, req: dict[str, Any]) -> dict[str, Any]:
        """At a secondary: apply what the primary applied, at its offset."""
        m = dataclasses.replace(Mutation.parse(req), record_id=_record_id(req))
        data = m.inline if m.inline is not None else self.buffers.get(m.data_id)
        async with self.replicas.order_lock(m.handle):
            await self.apply_local(m, data)
        if m.inline is None:
            self.buffers.mark_used(m.data_id)   # kept for a retry, but first to go
        return {"length": len(data)}

    async def truncate(self, req: dict[str, Any]) -> dict[str, Any]:
        handle = check_handle(need(req, "handle", int))
        version = check_version(need(req, "version", int))
        length = need(req, "length", int)
        secondaries = check_addrs(opt(req, "secondaries", list, []))
        async with self.replicas.order_lock(handle):
            await self.replicas.guard(handle, self.store.truncate(handle, length,
                                                                  expect_version=version))
            self.records.cut(handle, length)
            await self.fan_out(secondaries, "truncate",
                               {"handle": handle, "version": version, "length": length})
        return {}

    async def sync(self, req: dict[str, Any]) -> dict[str, Any]:
        relay = opt(req, "relay", str)
        if relay is not None:       # for a client that cannot reach that chunkd itself
            return await call(self.http, check_addr(relay), "sync",
                              {"handles": check_handles(need(req, "handles", list))},
                              timeout=self.peer_timeout or None)
        for h in check_handles(need(req, "handles", list)):
            await self.store.sync(h)
        return {}

    async def set_version(self, req: dict[str, Any]) -> dict[str, Any]:
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

    async def delete(self, req: dict[str, Any]) -> dict[str, Any]:
        handles = check_handles(need(req, "handles", list))
        await self.replicas.delete(handles)
        for handle in handles:
            self.records.forget(handle)
        return {}

    async def apply_local(self, m: Mutation, data: bytes) -> None:
        """Write ``data`` to this replica (fsync'd when ``m.sync``); a record
        append's id is remembered with where it landed."""
        await self.replicas.guard(m.handle, self.store.write(m.handle, m.offset, data,
                                                             expect_version=m.version))
        if m.sync:
            await self.store.sync(m.handle)
        if m.record_id:
            self.records.note(m.handle, m.record_id, m.offset, data)

    async def fan_out(self, addrs: list[str], name: str, body: dict[str, Any]) -> None:
        """``name`` on every secondary at once; UNAVAILABLE naming those that failed."""
        failed: list[str] = []
        full: list[str] = []

        async def one(addr: str) -> None:
            try:
                await call(self.http, addr, name, body, timeout=self.peer_timeout or None)
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


def check_handles(items: list[Any]) -> list[int]:
    return [check_handle(h) for h in items]


def check_addrs(items: list[Any]) -> list[str]:
    return [check_addr(a) for a in items]
