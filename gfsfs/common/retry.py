"""Failing over: the one transport-error mapping and the one retry policy.

Transport errors (a server that cannot be reached, a connection reset, a
timeout) become :class:`GFSError` UNAVAILABLE in one place, :func:`unavailable`
(or the :func:`reaching` block around a request). The error names the address
in its message and in ``err.addr``: *this process* could not reach that
server -- as opposed to an UNAVAILABLE a server answered (a peer of its
failed), whose ``addr`` is None on this side of the wire. ``err.unsent``
says the connection was never made, so the request cannot have been applied
(a retry of even a non-idempotent request is safe).

Every retry loop in the client and the chunkd waits with :class:`Backoff`:
exponential, with a cap and +-25 % jitter (so clients cut off together do not
come back in lockstep), and logs each failure louder as it repeats: the first
at DEBUG, the second at INFO, later ones at WARNING (:meth:`Backoff.level`).
The named policies below keep each caller's waits of before.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpcore
import httpx
import trio

from gfsfs.common.errors import Code, GFSError
from gfsfs.common.rpcclient import NotSent

# what httpx and httpcore raise when a server cannot be reached or does not answer
HTTPCORE_ERRORS: tuple[type[Exception], ...] = (
    httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
    httpcore.UnsupportedProtocol)
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, *HTTPCORE_ERRORS)
# those raised before a request was sent: no connection was made
UNSENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError, httpx.ConnectTimeout, httpcore.ConnectError, httpcore.ConnectTimeout,
    NotSent)


def unavailable(addr: str, exc: BaseException) -> GFSError:
    """The transport error ``exc`` met talking to ``addr``, as UNAVAILABLE."""
    err = GFSError(Code.UNAVAILABLE, f"{addr}: {type(exc).__name__}: {exc}")
    err.addr = addr
    err.unsent = isinstance(exc, UNSENT_ERRORS)
    return err


@contextmanager
def reaching(addr: str) -> Iterator[None]:
    """Transport errors inside the block raise :func:`unavailable` for ``addr``."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise unavailable(addr, exc) from None


@dataclass(frozen=True)
class Backoff:
    """Wait ``base * 2**retry`` seconds (at most ``cap``) +- ``jitter`` before
    retry number ``retry`` (0 = the first retry). ``quiet_every``: for loops
    that never give up, after the first warnings only every so many failures
    is logged at WARNING (the rest at DEBUG)."""
    base: float
    cap: float
    jitter: float = 0.25
    quiet_every: int = 0

    def delay(self, retry: int) -> float:
        wait = min(self.cap, self.base * 2 ** min(max(retry, 0), 30))
        return wait * random.uniform(1 - self.jitter, 1 + self.jitter)

    def level(self, retry: int) -> int:
        """The log level of failure number ``retry`` (0-based)."""
        if retry <= 0:
            return logging.DEBUG
        if retry == 1:
            return logging.INFO
        if self.quiet_every and retry > 2 and retry % self.quiet_every:
            return logging.DEBUG
        return logging.WARNING

    async def pause(self, retry: int, logger: logging.Logger, msg: str, *args: object) -> None:
        """Log failure number ``retry`` (``msg % args``, at :meth:`level`),
        then sleep :meth:`delay`."""
        logger.log(self.level(retry), msg, *args)
        await trio.sleep(self.delay(retry))


# master RPCs the client retries when the master cannot be reached: at most a
# second apart, so a mount notices a new primary within a second of its election
# (bench/failover.py: with a 5 s cap, 10-11 s from kill -9 to the next create)
MASTER = Backoff(0.2, 1.0)
# a read round that found no replica answering, before locations are refetched
READ = Backoff(0.1, 2.0)
# a write, append, truncate or fsync at the chunkds, with a fresh lease
MUTATION = Backoff(0.5, 5.0)


def heartbeat(interval: float) -> Backoff:
    """A chunkd that cannot reach the master tries again at least every 4
    heartbeat intervals (1 to 30 s), so it is back soon after the master is."""
    return Backoff(1.0, min(30.0, max(1.0, 4 * interval)), quiet_every=100)
