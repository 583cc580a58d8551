"""Signed requests: an HMAC-SHA256 over each request, made with the cluster secret.

A signed request carries one header::

    authorization: GFS-HMAC kid=<key id>,ts=<unix ms>,nonce=<hex>,body=<sha256 hex|UNSIGNED>,sig=<hex>

``sig`` is the HMAC of ``METHOD \\n TARGET \\n ts \\n nonce \\n body`` under
the key ``kid`` names; TARGET is the request target as sent (path and query).
``body`` is the SHA-256 of the body; a streamed body (chunk data) is sent
``UNSIGNED`` and is then accepted only by the routes that take one -- its
blocks carry CRC32C checksums, and against someone who can change bytes on
the wire use TLS (docs/security.md).

The server (:class:`Verifier`) refuses, always with the same short 401: no
header, a malformed one, an unknown key, a wrong signature or body digest, a
timestamp more than :data:`SKEW` seconds from its clock or older than the
verifier itself (signed before this process started: a replay across a
restart, whose nonce the new process cannot know), a nonce it has seen (a
replay). Comparisons are constant-time.

The check has two halves, so that a server refuses a stranger before it reads
(and buffers) a body: :meth:`Verifier.check_head` needs only the header (key,
signature, clock), :meth:`Verifier.check_body` then compares the body's digest
and only then remembers the nonce.
"""
from __future__ import annotations

import hashlib
import hmac as _hmac
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gfsfs.common.auth.secret import Secret
from gfsfs.common.auth.session import PREFIX as SESSION_PREFIX
from gfsfs.common.errors import Code, GFSError

HEADER = "authorization"
SCHEME = "GFS-HMAC"
UNSIGNED = "UNSIGNED"
SKEW = 60.0                 # seconds a request's timestamp may differ from the server's clock
GRAIN_MS = 1                # ms of clock granularity allowed before a verifier's start
MAX_NONCES = 2_000_000      # nonces remembered at most (a full cache refuses, it never forgets early)
EMPTY = hashlib.sha256(b"").hexdigest()


def body_digest(body: bytes | None) -> str:
    if body is None:
        return UNSIGNED
    return EMPTY if not body else hashlib.sha256(body).hexdigest()


def _message(method: str, target: str, ts: str, nonce: str, body: str) -> bytes:
    return f"{method}\n{target}\n{ts}\n{nonce}\n{body}".encode("latin-1")


class Signer:
    """Makes the ``authorization`` header of outgoing requests."""

    def __init__(self, secret: Secret, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.clock = clock

    def header(self, method: str, target: str, body: bytes | None) -> str:
        """The header for ``method target`` with ``body`` (None: streamed, unsigned)."""
        key = self.secret.signing
        ts = str(int(self.clock() * 1000))
        nonce = os.urandom(12).hex()
        digest = body_digest(body)
        sig = _hmac.new(key.material, _message(method, target, ts, nonce, digest),
                        "sha256").hexdigest()
        return f"{SCHEME} kid={key.kid},ts={ts},nonce={nonce},body={digest},sig={sig}"


def _refuse() -> GFSError:
    # one answer for every failure: a prober learns nothing about which part was wrong
    return GFSError(Code.UNAUTHORIZED, "authentication required")


def parse(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    if scheme != SCHEME or len(header) > 640:
        raise _refuse()
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or name in fields:
            raise _refuse()
        fields[name] = value
    if set(fields) != {"kid", "ts", "nonce", "body", "sig"} or not fields["ts"].isdigit() \
            or not 16 <= len(fields["nonce"]) <= 64:
        raise _refuse()
    return fields


@dataclass(frozen=True)
class Signed:
    """A request whose header checked out (:meth:`Verifier.check_head`): its
    body digest and its nonce are still to be checked."""
    kid: str
    nonce: str
    body: str           # the digest the header names (or UNSIGNED)
    ts: float           # its timestamp, seconds


class Verifier:
    """Checks signed requests: the key, the signature, the body, the clock, replays.

    Nonces are kept in memory only; what the process saw before it started is
    refused by its start: a timestamp older than ``since`` (default: when the
    verifier is made, just before the daemon listens) is refused, so a
    request captured before a restart cannot be replayed after it."""

    def __init__(self, secret: Secret, skew: float = SKEW,
                 clock: Callable[[], float] = time.time, since: float | None = None) -> None:
        self.secret = secret
        self.skew = skew
        self.clock = clock
        self.since_ms = int((clock() if since is None else since) * 1000) - GRAIN_MS
        self.nonces: dict[str, float] = {}          # nonce -> when it may be forgotten
        self.order: deque[tuple[float, str]] = deque()
        self.refused = 0                            # requests refused (metrics)

    def check(self, method: str, target: str, header: str | None, body: bytes | None,
              session: Callable[[str], bytes | None] | None = None) -> str:
        """Raise UNAUTHORIZED unless ``header`` signs this request; the key id
        that signed it. ``body`` None: the route streams its body, so an
        UNSIGNED body is accepted; otherwise the digest must be that of
        ``body``. ``session``: the key of an export session's ticket (a key id
        of :data:`gfsfs.common.auth.session.PREFIX`), None if it is no good;
        without it such key ids are refused. The two halves in one."""
        return self.check_body(self.check_head(method, target, header, session), body)

    def check_head(self, method: str, target: str, header: str | None,
                   session: Callable[[str], bytes | None] | None = None) -> Signed:
        """What can be checked before the body is read: the header's form,
        the key, the signature (over the digest it names), the timestamp.
        Raises UNAUTHORIZED; the nonce is not remembered yet."""
        try:
            return self._check_head(method, target, header, session)
        except GFSError:
            self.refused += 1
            raise

    def check_body(self, signed: Signed, body: bytes | None) -> str:
        """The rest, once the body is read (``body`` None: a streamed route):
        its digest, then the nonce (a replay is refused); the key id."""
        try:
            if signed.body != UNSIGNED or body is not None:
                if not _hmac.compare_digest(signed.body, body_digest(body or b"")):
                    raise _refuse()
            self._remember(signed.nonce, signed.ts + self.skew, self.clock())
        except GFSError:
            self.refused += 1
            raise
        return signed.kid

    def _material(self, kid: str, session: Callable[[str], bytes | None] | None) -> bytes:
        if kid.startswith(SESSION_PREFIX):
            material = session(kid) if session is not None else None
        else:
            key = self.secret.key(kid)
            material = key.material if key is not None else None
        if material is None:
            raise _refuse()
        return material

    def _check_head(self, method: str, target: str, header: str | None,
                    session: Callable[[str], bytes | None] | None) -> Signed:
        if not header:
            raise _refuse()
        f = parse(header)
        expected = _hmac.new(self._material(f["kid"], session),
                             _message(method, target, f["ts"], f["nonce"], f["body"]),
                             "sha256").hexdigest()
        if not _hmac.compare_digest(expected, f["sig"]):
            raise _refuse()
        self._fresh(int(f["ts"]))
        return Signed(f["kid"], f["nonce"], f["body"], int(f["ts"]) / 1000)

    def _fresh(self, ts_ms: int) -> None:
        """Refuse a timestamp off the clock by more than the skew, or made
        before this verifier started."""
        if abs(self.clock() - ts_ms / 1000) > self.skew or ts_ms < self.since_ms:
            raise _refuse()

    def remember_once(self, nonce: str, ts: float) -> None:
        """Note ``nonce`` of a request made at ``ts``; UNAUTHORIZED if it was
        seen before or made before this verifier started (another signed
        thing than a request: an export's open)."""
        if round(ts * 1000) < self.since_ms:
            raise _refuse()
        self._remember(nonce, ts + self.skew, self.clock())

    def _remember(self, nonce: str, until: float, now: float) -> None:
        order = self.order
        while order and order[0][0] < now:
            self.nonces.pop(order.popleft()[1], None)
        if nonce in self.nonces or len(self.nonces) >= MAX_NONCES:
            raise _refuse()
        self.nonces[nonce] = until
        order.append((until, nonce))
