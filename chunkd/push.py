"""The data push (GFS §3.2): pushed bytes buffered by data id, streamed on
down the replica chain while they arrive.

:class:`PushBuffers` keeps each pushed body for ``ttl`` seconds (and, oldest
first, at most ``max_bytes`` in all) until a commit or apply uses it.
:func:`receive_and_forward` collects a body and, at the same time, sends it to
the next chunkd of the chain with the rest of the chain in ``X-GFS-Chain``.
"""
from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

import httpx
import trio

from gfsfs import validate
from gfsfs.errors import GFSError
from gfsfs.protocol import CHAIN_HEADER
from gfsfs.rpc import OCTETS, decode_reply

log = logging.getLogger(__name__)

DATA_ID = re.compile(r"[0-9a-fA-F]{1,64}")
MAX_CHAIN = 16
MAX_PUSH_BYTES = 256 << 20        # all buffered pushes together; oldest dropped first


def check_data_id(data_id: object) -> str:
    if not isinstance(data_id, str) or not DATA_ID.fullmatch(data_id):
        raise GFSError("BADREQ", f"bad data id {data_id!r}: 1-64 hex digits expected")
    return data_id


def check_addr(addr: object) -> str:
    """A chunkd address ``http://host:port`` (no path), BADREQ otherwise."""
    return validate.check_addr(addr, "chunkd address")


def parse_chain(header: str) -> list[str]:
    chain = [check_addr(a.strip()) for a in header.split(",") if a.strip()]
    if len(chain) > MAX_CHAIN:
        raise GFSError("BADREQ", f"chain of {len(chain)} addresses is too long")
    return chain


class PushBuffers:
    """Pushed data by data id, dropped after ``ttl`` seconds."""

    def __init__(self, ttl: float, max_bytes: int = MAX_PUSH_BYTES) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.bytes = 0
        self.received_bytes = 0     # all pushed bytes ever put here (for /metrics)
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, data_id: str, data: bytes) -> None:
        self.expire()
        self._drop(data_id)
        self.received_bytes += len(data)
        self._items[data_id] = (time.monotonic() + self.ttl, data)
        self.bytes += len(data)
        while self.bytes > self.max_bytes and len(self._items) > 1:
            oldest = next(iter(self._items))
            log.warning("push buffer full: dropping %s early", oldest)
            self._drop(oldest)

    def get(self, data_id: str) -> bytes:
        """The data pushed under ``data_id``; EAGAIN when unknown or expired."""
        self.expire()
        item = self._items.get(data_id)
        if item is None:
            raise GFSError("EAGAIN", f"no pushed data {data_id!r} (expired or never pushed)")
        return item[1]

    def discard(self, data_id: str) -> None:
        self._drop(data_id)

    def expire(self) -> None:
        now = time.monotonic()
        for data_id in [k for k, (deadline, _) in self._items.items() if deadline <= now]:
            self._drop(data_id)

    def _drop(self, data_id: str) -> None:
        item = self._items.pop(data_id, None)
        if item is not None:
            self.bytes -= len(item[1])


async def receive_and_forward(http: httpx.AsyncClient, pieces: AsyncIterator[bytes],
                              data_id: str, chain: list[str], timeout: float | None = None
                              ) -> tuple[bytes, GFSError | None]:
    """All of ``pieces``, forwarded as they arrive to ``chain[0]`` (which gets
    ``chain[1:]`` as its chain), and None, or UNAVAILABLE naming the failed
    address when the rest of the chain did not get all of it. Raises when the
    pieces themselves could not be received."""
    parts: list[bytes] = []
    failures: list[GFSError] = []
    received: list[GFSError] = []
    send, recv = trio.open_memory_channel[bytes](16)
    async with trio.open_nursery() as nursery:
        if chain:
            nursery.start_soon(_forward, http, recv, data_id, chain, failures, timeout)
        else:
            recv.close()
        async with send:
            try:
                async for piece in pieces:
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
                   timeout: float | None = None) -> None:
    """PUT the pieces from ``recv`` to the next hop; never raises. ``timeout``:
    how long the next hop may stall (a stopped chunkd must not hold the push)."""
    target, rest = chain[0], chain[1:]

    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        async for piece in recv:
            sent += len(piece)
            yield piece

    try:
        extra = {} if timeout is None else {"timeout": timeout}
        resp = await http.put(f"{target}/data/{data_id}", content=body(),
                              headers={CHAIN_HEADER: ",".join(rest), "content-type": OCTETS},
                              **extra)
        reply = decode_reply(resp.status_code, resp.content)
        if not isinstance(reply, dict) or reply.get("length") != sent:
            raise GFSError("UNAVAILABLE", f"{target}: got {reply!r} after {sent} bytes")
    except httpx.HTTPError as exc:
        failures.append(GFSError("UNAVAILABLE", f"{target}: {type(exc).__name__}: {exc}"))
    except GFSError as exc:
        msg = exc.message if exc.code == "UNAVAILABLE" else f"{target}: {exc}"
        failures.append(GFSError("UNAVAILABLE", msg))
    except Exception as exc:  # never let a forwarding bug take the receiving side down
        log.exception("forwarding %s to %s failed", data_id, target)
        failures.append(GFSError("UNAVAILABLE", f"{target}: {type(exc).__name__}: {exc}"))
    finally:
        recv.close()
