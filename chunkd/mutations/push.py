"""The data push (GFS §3.2): pushed bytes buffered by data id, streamed on
down the replica chain while they arrive.

:class:`PushBuffers` is the chunkd's LRU buffer cache of pushed data. A push
first reserves room for its bytes (its Content-Length, or piece by piece when
unknown): while the buffers hold ``max_bytes`` (``push_buffer_bytes``) a push
waits up to ``wait`` seconds (``push_buffer_wait``) for room, then gets EAGAIN
(which writers retry). A push that still has ``r`` chunkds after it in its chain
may fill the buffers only to ``max_bytes / (r + 1)``: the room a hop further
down a chain needs is never all taken by pushes nearer their start, so pushes
holding room on one chunkd while they wait for room on the next never wait on
each other in a circle (a chain A->B and a chain B->A would otherwise deadlock
until the wait ran out). Room is made, oldest first, from data some commit or
apply already used (kept only for a retried commit), then, for a push that
waited in vain, from data that has waited over ``ttl``/4 for its commit (most
likely abandoned: its writer retried under another id). Everything else leaves
when its commit uses it or ``ttl`` (``push_buffer_ttl``) seconds after it
arrived: :meth:`PushBuffers.run_expiry` drops expired data on a timer, so a
burst of writes does not stay buffered until the next push.

:func:`receive_and_forward` collects a body and, at the same time, sends it to
the next chunkd of the chain with the rest of the chain in ``X-GFS-Chain``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import trio

from gfsfs.common import validate
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import CHAIN_HEADER
from gfsfs.common.retry import TRANSPORT_ERRORS, unavailable
from gfsfs.common.rpc import OCTETS, decode_reply

log = logging.getLogger(__name__)

DATA_ID = re.compile(r"[0-9a-fA-F]{1,64}")
MAX_CHAIN = 16
MAX_PUSH_BYTES = 128 << 20        # default cap of all buffered and incoming pushes together
TRIM_AFTER_BYTES = 16 << 20       # hand freed memory back to the OS after dropping this much


def check_data_id(data_id: object) -> str:
    if not isinstance(data_id, str) or not DATA_ID.fullmatch(data_id):
        raise GFSError(Code.BADREQ, f"bad data id {data_id!r}: 1-64 hex digits expected")
    return data_id


def check_addr(addr: object) -> str:
    """A chunkd address ``http://host:port`` (no path), BADREQ otherwise."""
    return validate.check_addr(addr, "chunkd address")


def parse_chain(header: str) -> list[str]:
    chain = [check_addr(a.strip()) for a in header.split(",") if a.strip()]
    if len(chain) > MAX_CHAIN:
        raise GFSError(Code.BADREQ, f"chain of {len(chain)} addresses is too long")
    return chain


@dataclass
class Pushed:
    """One pushed body: when it arrived, when it expires, whether a commit or
    apply has used it already."""
    data: bytes
    arrived: float
    deadline: float
    used: bool = False


class Reservation:
    """Room in :class:`PushBuffers` for one push while its bytes arrive;
    ``hops``: the chunkds after this one in the push's chain."""

    def __init__(self, buffers: PushBuffers, hops: int = 0) -> None:
        self.buffers = buffers
        self.hops = hops
        self.bytes = 0

    async def grow(self, n: int) -> None:
        """Room for ``n`` more bytes (waits while full; EAGAIN after the wait)."""
        await self.buffers.make_room(n, self.bytes, self.buffers.max_bytes // (self.hops + 1))
        self.bytes += n
        self.buffers.reserved += n

    def release(self) -> None:
        self.buffers.reserved -= self.bytes
        self.bytes = 0
        self.buffers.freed()


class PushBuffers:
    """Pushed data by data id: at most ``max_bytes`` (stored plus incoming),
    each kept at most ``ttl`` seconds."""

    def __init__(self, ttl: float, max_bytes: int = MAX_PUSH_BYTES, wait: float = 5.0) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.wait = wait
        self.bytes = 0              # stored pushed bytes
        self.reserved = 0           # room held by pushes still arriving
        self.received_bytes = 0     # all pushed bytes ever put here (for /metrics)
        self.expired_bytes = 0      # dropped unused after ttl (for /metrics)
        self.evicted_bytes = 0      # dropped early to make room (for /metrics)
        self.waits = 0              # pushes that had to wait for room
        self.rejected = 0           # pushes answered EAGAIN for want of room
        self._items: OrderedDict[str, Pushed] = OrderedDict()
        self._room = trio.Event()   # set (and replaced) whenever room is freed
        self._dropped_since_trim = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def held(self) -> int:
        return self.bytes + self.reserved

    # ------------------------------------------------------------ room

    def reservation(self, hops: int = 0) -> Reservation:
        return Reservation(self, hops)

    async def make_room(self, n: int, own: int = 0, limit: int | None = None) -> None:
        """Wait until ``n`` more bytes fit under ``limit`` (default
        ``max_bytes``; a push holding ``own`` bytes already that is alone in
        the buffers always fits); EAGAIN after ``wait`` seconds."""
        limit = self.max_bytes if limit is None else limit
        deadline = trio.current_time() + self.wait
        waited = False
        while True:
            self.expire()
            if self._fits(n, own, limit) or self._evict(n, own, limit, used_only=True):
                return
            if trio.current_time() >= deadline:
                if self._evict(n, own, limit, used_only=False, idle=self.ttl / 4):
                    return
                self.rejected += 1
                raise GFSError(Code.EAGAIN, f"push buffers full ({self.held} of {self.max_bytes}"
                                         f" bytes) for {self.wait:g} s; retry later")
            if not waited:
                waited = True
                self.waits += 1
            with trio.move_on_at(deadline):
                await self._room.wait()

    def _fits(self, n: int, own: int, limit: int) -> bool:
        return self.held + n <= limit or self.held == own

    def _evict(self, n: int, own: int, limit: int, used_only: bool, idle: float = 0.0) -> bool:
        """Drop (oldest first) used data, or else data idle over ``idle`` s,
        until ``n`` bytes fit; whether they do."""
        now = time.monotonic()
        for data_id, item in list(self._items.items()):
            if self._fits(n, own, limit):
                break
            if item.used or (not used_only and now - item.arrived > idle):
                if not item.used:
                    log.warning("push buffers full: dropping %s, unused for %.1f s",
                                data_id, now - item.arrived)
                self.evicted_bytes += len(item.data)
                self._drop(data_id)
        return self._fits(n, own, limit)

    def freed(self) -> None:
        self._room.set()
        self._room = trio.Event()

    # ------------------------------------------------------------ data

    def put(self, data_id: str, data: bytes, reservation: Reservation | None = None) -> None:
        """Store a pushed body (in the room ``reservation`` held for it)."""
        self._drop(data_id)
        if reservation is not None:
            self.reserved -= reservation.bytes
            reservation.bytes = 0
        self.received_bytes += len(data)
        now = time.monotonic()
        self._items[data_id] = Pushed(data, now, now + self.ttl)
        self.bytes += len(data)
        self.expire()

    def get(self, data_id: str) -> bytes:
        """The data pushed under ``data_id``; EAGAIN when unknown or expired."""
        self.expire()
        item = self._items.get(data_id)
        if item is None:
            raise GFSError(Code.EAGAIN, f"no pushed data {data_id!r} (expired or never pushed)")
        return item.data

    def mark_used(self, data_id: str) -> None:
        """A mutation applied this data: it is the first to go when room is needed."""
        item = self._items.get(data_id)
        if item is not None:
            item.used = True
            self._items.move_to_end(data_id)

    def discard(self, data_id: str) -> None:
        self._drop(data_id)

    def expire(self) -> None:
        now = time.monotonic()
        for data_id in [k for k, item in self._items.items() if item.deadline <= now]:
            item = self._items[data_id]
            if not item.used:
                self.expired_bytes += len(item.data)
            self._drop(data_id)

    async def run_expiry(self, period: float = 1.0) -> None:
        """Drop expired data every ``period`` seconds (at most ttl/4), and hand
        the freed memory back to the OS once enough has gone."""
        period = max(0.05, min(period, self.ttl / 4))
        while True:
            await trio.sleep(period)
            self.expire()
            if (self._dropped_since_trim >= TRIM_AFTER_BYTES
                    and self.held <= self.max_bytes // 4):
                self._dropped_since_trim = 0
                await trio.to_thread.run_sync(release_memory)

    def _drop(self, data_id: str) -> None:
        item = self._items.pop(data_id, None)
        if item is not None:
            self.bytes -= len(item.data)
            self._dropped_since_trim += len(item.data)
            self.freed()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):       # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    return trim  # type: ignore[no-any-return]


def release_memory() -> None:
    """``malloc_trim(0)`` where glibc has it: pushed bodies are big heap blocks
    that glibc otherwise keeps mapped after they are freed (the RSS stays up)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


async def receive_and_forward(http: httpx.AsyncClient, pieces: AsyncIterator[bytes],
                              data_id: str, chain: list[str], timeout: float | None = None,
                              length: int | None = None,
                              reservation: Reservation | None = None
                              ) -> tuple[bytes, GFSError | None]:
    """All of ``pieces``, forwarded as they arrive to ``chain[0]`` (which gets
    ``chain[1:]`` as its chain, and ``length`` as the Content-Length when it is
    known), and None, or UNAVAILABLE naming the failed address when the rest of
    the chain did not get all of it. Raises when the pieces themselves could
    not be received. ``reservation`` grows to cover every piece received."""
    parts: list[bytes] = []
    failures: list[GFSError] = []
    received: list[GFSError] = []
    send, recv = trio.open_memory_channel[bytes](16)
    async with trio.open_nursery() as nursery:
        if chain:
            nursery.start_soon(_forward, http, recv, data_id, chain, failures, timeout, length)
        else:
            recv.close()
        async with send:
            try:
                got = 0
                async for piece in pieces:
                    got += len(piece)
                    if reservation is not None and got > reservation.bytes:
                        await reservation.grow(got - reservation.bytes)
                    parts.append(piece)
                    if chain and not failures:
                        try:
                            await send.send(piece)
                        except trio.BrokenResourceError:
                            pass        # the next hop gave up; its error is in failures
            except GFSError as exc:
                received.append(exc)
                nursery.cancel_scope.cancel()
    if received:
        raise received[0]
    return b"".join(parts), (failures[0] if failures else None)


async def _forward(http: httpx.AsyncClient, recv: trio.MemoryReceiveChannel[bytes],
                   data_id: str, chain: list[str], failures: list[GFSError],
                   timeout: float | None = None, length: int | None = None) -> None:
    """PUT the pieces from ``recv`` to the next hop; never raises. ``timeout``:
    how long the next hop may stall (a stopped chunkd must not hold the push);
    ``length``: the body's size when known (the next hop reserves room for it
    before it reads a byte)."""
    target, rest = chain[0], chain[1:]

    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        async for piece in recv:
            sent += len(piece)
            yield piece

    try:
        extra = {} if timeout is None else {"timeout": timeout}
        headers = {CHAIN_HEADER: ",".join(rest), "content-type": OCTETS}
        if length is not None:
            headers["content-length"] = str(length)
        resp = await http.put(f"{target}/data/{data_id}", content=body(), headers=headers,
                              **extra)
        reply = decode_reply(resp.status_code, resp.content)
        if not isinstance(reply, dict) or reply.get("length") != sent:
            raise GFSError(Code.UNAVAILABLE, f"{target}: got {reply!r} after {sent} bytes")
    except TRANSPORT_ERRORS as exc:
        failures.append(unavailable(target, exc))
    except GFSError as exc:
        msg = exc.message if exc.code == Code.UNAVAILABLE else f"{target}: {exc}"
        failures.append(GFSError(Code.UNAVAILABLE, msg))
    except Exception as exc:  # never let a forwarding bug take the receiving side down
        log.exception("forwarding %s to %s failed", data_id, target)
        failures.append(GFSError(Code.UNAVAILABLE, f"{target}: {type(exc).__name__}: {exc}"))
    finally:
        recv.close()
