"""Chunk access tokens (HDFS's block tokens): the master's word that a client
may read or write one chunk for a while.

A token is a short string::

    T1.<period>.<handle>.<version>.<access>.<expires ms>.<mac>

``access`` is ``r`` (read) or ``w`` (write, which includes read); ``mac`` is
an HMAC-SHA256 (truncated to 128 bits) of the rest under the *period key*:
a key derived from the cluster secret for one :data:`PERIOD` of time, so the
key that signs tokens changes every period without anything being sent
(:meth:`TokenKeys.key`). A chunkd accepts a token of the current or the
previous period, unexpired, for the chunk it asks about, with enough access.
A write token's version must be the replica's: a lease holder of an older
version (fenced by the next lease's version bump) is refused at once.

An expired token is answered STALE: the client asks the master for fresh
locations (and tokens), as it does for any stale location.
"""
from __future__ import annotations

import hmac as _hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

from gfsfs.common.auth.secret import Secret
from gfsfs.common.errors import Code, GFSError

HEADER = "x-gfs-token"
PERIOD = 3600.0             # seconds a period key signs tokens
LIFETIME = 600.0            # seconds a token is valid (below PERIOD: at most two keys in play)
READ, WRITE = "r", "w"


@dataclass(frozen=True)
class Token:
    period: int
    handle: int
    version: int
    access: str
    expires_ms: int


class TokenKeys:
    """The period keys of one cluster secret (master and chunkds alike)."""

    def __init__(self, secret: Secret, clock: Callable[[], float] = time.time,
                 lifetime: float = LIFETIME) -> None:
        self.secret = secret
        self.clock = clock
        self.lifetime = lifetime
        self._keys: dict[tuple[str, int], bytes] = {}

    def key(self, period: int, kid: str | None = None) -> bytes | None:
        k = self.secret.signing if kid is None else self.secret.key(kid)
        if k is None:
            return None
        cached = self._keys.get((k.kid, period))
        if cached is None:
            if len(self._keys) > 64:
                self._keys.clear()
            base = k.derive("chunk tokens")
            cached = self._keys[(k.kid, period)] = _hmac.new(
                base, f"period {period}".encode(), "sha256").digest()
        return cached

    def issue(self, handle: int, version: int, access: str) -> str:
        now = self.clock()
        period = int(now // PERIOD)
        body = f"{period}.{handle}.{version}.{access}.{int((now + self.lifetime) * 1000)}"
        key = self.key(period)
        assert key is not None
        mac = _hmac.new(key, body.encode(), "sha256").hexdigest()[:32]
        return f"T1.{body}.{self.secret.signing.kid}.{mac}"

    def check(self, text: str | None, handle: int, access: str,
              version: int | None = None) -> Token:
        """The token ``text``, if it lets its holder ``access`` chunk ``handle``
        (at ``version``, for writes); UNAUTHORIZED if it is missing, forged or
        for something else, STALE if it expired or names an older version."""
        token = self.check_any(text, access)
        if token.handle != handle:
            raise GFSError(Code.UNAUTHORIZED, "the chunk token is not for this access")
        if access == WRITE and version is not None and token.version < version:
            raise GFSError(Code.STALE, f"the chunk token is for version {token.version}; "
                                       f"the replica is at {version}")
        return token

    def check_any(self, text: str | None, access: str) -> Token:
        """The token ``text`` if it is valid and unexpired with ``access``, for
        whichever chunk (a push or a sync names none): UNAUTHORIZED or STALE."""
        token = self.parse(text)
        if access == WRITE and token.access != WRITE:
            raise GFSError(Code.UNAUTHORIZED, "the chunk token is not for this access")
        if token.expires_ms < self.clock() * 1000:
            raise GFSError(Code.STALE, "the chunk token expired: ask the master again")
        return token

    def parse(self, text: str | None) -> Token:
        """A well-formed token with a valid MAC from a key we accept; UNAUTHORIZED otherwise."""
        bad = GFSError(Code.UNAUTHORIZED, "a valid chunk token is required")
        if not text or len(text) > 200:
            raise bad
        parts = text.split(".")
        if len(parts) != 8 or parts[0] != "T1" or parts[4] not in (READ, WRITE) \
                or not all(p.isdigit() and p.isascii() for p in parts[1:4] + parts[5:6]):
            raise bad
        period = int(parts[1])
        now_period = int(self.clock() // PERIOD)
        if abs(period - now_period) > 1:      # the previous period's, or a clock a little ahead
            raise bad
        key = self.key(period, parts[6])
        if key is None:
            raise bad
        mac = _hmac.new(key, ".".join(parts[1:6]).encode(), "sha256").hexdigest()[:32]
        if not _hmac.compare_digest(mac, parts[7]):
            raise bad
        return Token(period, int(parts[2]), int(parts[3]), parts[4], int(parts[5]))


def expires(text: str) -> float:
    """When the token ``text`` expires (Unix seconds; 0 if it is not one): the
    holder's view, read off its public part, to renew it in time."""
    parts = text.split(".")
    return int(parts[5]) / 1000 if len(parts) == 8 and parts[5].isdigit() else 0.0
