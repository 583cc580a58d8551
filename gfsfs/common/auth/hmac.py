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
timestamp more than :data:`SKEW` seconds from its clock, a nonce it has seen
(a replay), or one signed before the server started (the nonces of a
predecessor are not kept: so a replay across a restart is refused too).
Comparisons are constant-time.
"""
from __future__ import annotations

import hashlib
import hmac as _hmac
import os
import time
from collections import deque
from collections.abc import Callable

from gfsfs.common.auth.secret import Secret
from gfsfs.common.auth.session import PREFIX as SESSION_PREFIX
from gfsfs.common.errors import Code, GFSError

HEADER = "authorization"
SCHEME = "GFS-HMAC"
UNSIGNED = "UNSIGNED"
SKEW = 60.0                 # seconds a request's timestamp may differ from the server's clock
START_MARGIN = 1.0          # seconds before start-up a request may have been signed (clock steps)
MAX_NONCES = 2_000_000      # nonces remembered at most (a full cache refuses, it never forgets early)
EMPTY = hashlib.sha256(b"").hexdigest()
# a ``body`` for Verifier.check before the body is read: everything in the
# header is checked (key, signature, clock); the body digest and the nonce
# are checked by the second call, with the body
NOT_READ = b"\0not read\0"


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


class Verifier:
    """Checks signed requests: the key, the signature, the body, the clock, replays."""

    def __init__(self, secret: Secret, skew: float = SKEW,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.skew = skew
        self.clock = clock
        self.nonces: dict[str, float] = {}          # nonce -> when it may be forgotten
        self.order: deque[tuple[float, str]] = deque()
        self.refused = 0                            # requests refused (metrics)
        # nonces are kept in memory only: a request signed before this process
        # started (a replay of one its predecessor saw) is refused
        self.not_before = clock() - START_MARGIN

    def check(self, method: str, target: str, header: str | None, body: bytes | None,
              session: Callable[[str], bytes | None] | None = None) -> str:
        """Raise UNAUTHORIZED unless ``header`` signs this request; the key id
        that signed it. ``body`` None: the route streams its body, so an
        UNSIGNED body is accepted; otherwise the digest must be that of
        ``body``. ``session``: the key of an export session's ticket (a key id
        of :data:`gfsfs.common.auth.session.PREFIX`), None if it is no good;
        without it such key ids are refused."""
        try:
            return self._check(method, target, header, body, session)
        except GFSError:
            self.refused += 1
            raise

    def _material(self, kid: str, session: Callable[[str], bytes | None] | None) -> bytes:
        if kid.startswith(SESSION_PREFIX):
            material = session(kid) if session is not None else None
        else:
            key = self.secret.key(kid)
            material = key.material if key is not None else None
        if material is None:
            raise _refuse()
        return material

    def _check(self, method: str, target: str, header: str | None, body: bytes | None,
               session: Callable[[str], bytes | None] | None) -> str:
        if not header:
            raise _refuse()
        f = parse(header)
        expected = _hmac.new(self._material(f["kid"], session),
                             _message(method, target, f["ts"], f["nonce"], f["body"]),
                             "sha256").hexdigest()
        if not _hmac.compare_digest(expected, f["sig"]):
            raise _refuse()
        now = self.clock()
        ts = int(f["ts"]) / 1000
        if abs(now - ts) > self.skew or ts < self.not_before:
            raise _refuse()
        if body is NOT_READ:            # headers only (before the body is read): no more yet
            return f["kid"]
        if f["body"] != UNSIGNED or body is not None:
            if not _hmac.compare_digest(f["body"], body_digest(body or b"")):
                raise _refuse()
        self._remember(f["nonce"], ts + self.skew, now)
        return f["kid"]

    def remember_once(self, nonce: str, ts: float) -> None:
        """Note ``nonce`` of a request made at ``ts``; UNAUTHORIZED if it was
        seen before (another signed thing than a request: an export's open)."""
        self._remember(nonce, ts + self.skew, self.clock())

    def _remember(self, nonce: str, until: float, now: float) -> None:
        order = self.order
        while order and order[0][0] < now:
            self.nonces.pop(order.popleft()[1], None)
        if nonce in self.nonces or len(self.nonces) >= MAX_NONCES:
            raise _refuse()
        self.nonces[nonce] = until
        order.append((until, nonce))
