"""Export sessions: how a mount that does not hold the cluster secret proves
itself to the masters (docs/security.md#exports; the rules are
:mod:`master.exports`).

A mount opens a session with ``session_open`` (an export's password, or
only its address, or a request signed with the cluster secret); the master
answers a **ticket** and a **session key**, and the mount then signs every
master request as any signed request (:mod:`gfsfs.common.auth.hmac`) with
the ticket as the key id and the session key as the key::

    S1.<kid>.<export>.<root>.<address>.<issued>.<random>.<mac>

``kid`` names the cluster-secret key that made it, ``export`` the rule,
``root`` the inode the session sees as its root, ``address`` (hex of the
packed IP) the only client address it is good from, ``issued`` (unix
seconds) when it was made. ``mac`` binds these and the export rule's
*fingerprint* (what the rule says today): change or remove the rule and its
sessions are refused, and their mounts open new ones if the rules still let
them. The session key is derived from the ticket and the secret, so every
master (shadows too, and after a restart) checks a session without keeping
anything: no session table to lose.

With an export password the key is sent wrapped (XOR with an HMAC of the
password: only the holder of the password unwraps it), and the open is
proven by an HMAC of the password over the path, a timestamp and a nonce.
"""
from __future__ import annotations

import functools
import hashlib
import hmac as _hmac
import ipaddress
import os
import re
import time
from dataclasses import dataclass

from gfsfs.common.auth.secret import Key, Secret

PREFIX = "S1."
NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")      # an export's name
MAX_TICKET = 200


@dataclass(frozen=True)
class Ticket:
    kid: str
    export: str
    root: int
    address: str            # the client address, as ipaddress prints it
    issued: int
    text: str               # the whole ticket, as sent


def _mac(key: Key, body: str, fingerprint: str) -> str:
    return _hmac.new(key.derive("export ticket"), f"{body}\n{fingerprint}".encode(),
                     "sha256").hexdigest()[:32]


def _packed(address: str) -> str:
    return ipaddress.ip_address(address).packed.hex()


def make_ticket(secret: Secret, export: str, fingerprint: str, root: int, address: str,
                now: float | None = None) -> str:
    """A ticket for ``export`` (whose rule's fingerprint is ``fingerprint``)
    seen from ``address``, rooted at inode ``root``."""
    key = secret.signing
    issued = int(time.time() if now is None else now)
    body = (f"{PREFIX}{key.kid}.{export}.{root}.{_packed(address)}.{issued}."
            f"{os.urandom(4).hex()}")
    return f"{body}.{_mac(key, body, fingerprint)}"


@functools.lru_cache(maxsize=4096)
def parse_ticket(text: str) -> Ticket | None:
    """The fields of ``text`` (not yet checked: :func:`check_ticket`), None
    if it is not a ticket. Cached: every request of a session names the same
    ticket, parsed at admission and again by the export guard."""
    if not text.startswith(PREFIX) or len(text) > MAX_TICKET:
        return None
    parts = text[len(PREFIX):].split(".")
    if len(parts) != 7:
        return None
    kid, export, root, packed, issued, _rand, _mac_hex = parts
    if not NAME.match(export) or not root.isdigit() or not issued.isdigit():
        return None
    try:
        address = str(ipaddress.ip_address(bytes.fromhex(packed)))
    except ValueError:
        return None
    return Ticket(kid, export, int(root), address, int(issued), text)


def check_ticket(secret: Secret, ticket: Ticket, fingerprint: str) -> bytes | None:
    """The session key of ``ticket`` if its MAC is right for a rule of
    ``fingerprint`` (constant-time), else None."""
    key = secret.key(ticket.kid)
    if key is None:
        return None
    body, _, mac = ticket.text.rpartition(".")
    if not _hmac.compare_digest(_mac(key, body, fingerprint), mac):
        return None
    return session_key(key, ticket.text)


def session_key(key: Key, ticket: str) -> bytes:
    return _hmac.new(key.derive("session key"), ticket.encode(), "sha256").digest()


def key_of(secret: Secret, ticket: str) -> bytes:
    """The session key of a ticket this process just made."""
    return session_key(secret.signing, ticket)


def wrap(session: bytes, password: bytes, ticket: str) -> bytes:
    """``session`` XOR a pad only a holder of ``password`` can make (the same
    call unwraps it)."""
    pad = _hmac.new(password, b"gfsfs session key wrap\0" + ticket.encode(), "sha256").digest()
    return bytes(a ^ b for a, b in zip(session, pad))


def open_proof(password: bytes, path: str, ts: str, nonce: str) -> str:
    """What a mount sends to show it holds an export's password."""
    return _hmac.new(password, f"gfsfs export open\n{path}\n{ts}\n{nonce}".encode(),
                     "sha256").hexdigest()


def fingerprint(*fields: object) -> str:
    """A short digest of what an export rule says (its sessions die with it)."""
    return hashlib.sha256(repr(fields).encode()).hexdigest()[:16]


def session_secret(ticket: str, key: bytes) -> Secret:
    """A :class:`Secret` whose one key is the session's: what a mount signs
    its master requests with (:class:`gfsfs.common.auth.hmac.Signer`)."""
    return Secret((Key(ticket, key),))
