"""A mount's export session (docs/security.md#exports): opened at the masters
with ``session_open`` by a client that does not hold the cluster secret, or
that asks for an export (``[client] export``, ``-o export=PATH``,
``password_file``). The session's ticket and key then sign every master
request (:mod:`gfsfs.common.auth.session`); the chunkds are shown the chunk
tokens the master hands out, as with the secret. The session's root is the
inode the client shows as its root (inode 1).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gfsfs.common import rpc
from gfsfs.common.auth import session as sessions
from gfsfs.common.auth.hmac import Signer
from gfsfs.common.auth.private import read_private
from gfsfs.common.errors import Code, GFSError

log = logging.getLogger(__name__)

ROOT_INO = 1
INODE_FIELDS = ("ino", "parent", "new_parent", "src")


class SessionError(ValueError):
    """A password file that cannot be used (the message names it)."""


@dataclass(frozen=True)
class Session:
    ticket: str
    root: int
    readonly: bool
    export: str
    open: bool = False          # the masters have no secret: nothing to sign

    def signer(self, key: bytes) -> Signer:
        return Signer(sessions.session_secret(self.ticket, key))


def wanted(cfg: Any, secret: object | None) -> bool:
    """Whether a mount opens an export session: when it asks for an export
    or shows a password, or has no cluster secret to sign with (an open
    cluster then answers that nothing needs signing)."""
    return bool(cfg.export or cfg.password_file) or secret is None


def read_password(path: str) -> bytes:
    """The export password in ``path`` (mode 0600, as the secret)."""
    text = read_private(Path(path), "password file", "write the export's password into it",
                        SessionError).strip()
    if not text:
        raise SessionError(f"password file {path} is empty")
    return text.encode()


def open_request(path: str, password: bytes | None) -> dict[str, Any]:
    body: dict[str, Any] = {"path": path}
    if password is not None:
        ts, nonce = str(int(time.time() * 1000)), os.urandom(12).hex()
        body.update(ts=ts, nonce=nonce, proof=sessions.open_proof(password, path, ts, nonce))
    return body


async def open_session(masters: Any, http: rpc.RpcHTTP, path: str,
                       password: bytes | None) -> Session:
    """Open a session for ``path`` at the masters and sign with it from now
    on. EACCES (no export lets us in), or the masters' error."""
    try:
        reply = await masters.call("session_open", open_request(path, password))
    except GFSError as exc:
        if exc.code != Code.NOROUTE or path != "/" or password is not None:
            raise
        # a master from before exports: nothing to open (and none is asked for)
        return Session("", ROOT_INO, False, "", open=True)
    if reply.get("open"):           # an open cluster: no export rules, nothing signed
        return Session("", int(reply["root"]), False, "", open=True)
    ticket, key = str(reply["ticket"]), bytes(reply["key"])
    if reply.get("wrapped"):
        if password is None:
            raise GFSError(Code.EACCES, "the export wants a password")
        key = sessions.wrap(key, password, ticket)
    session = Session(ticket, int(reply["root"]), bool(reply.get("readonly")),
                      str(reply.get("export", "")))
    http.sign_with(session.signer(key))
    log.info("export session: %s as %s%s (root inode %d)", path, session.export,
             ", read-only" if session.readonly else "", session.root)
    return session


def to_master(root: int, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with our root (inode 1) as the session's root."""
    if not any(body.get(k) == ROOT_INO for k in INODE_FIELDS):
        return body
    return {k: (root if k in INODE_FIELDS and v == ROOT_INO else v) for k, v in body.items()}


def from_master(root: int, reply: Any) -> Any:
    """``reply`` with the session's root shown as inode 1 (in attributes,
    ``parent_attr`` and readdir entries)."""
    if not isinstance(reply, dict):
        return reply
    if reply.get("ino") == root:
        reply = dict(reply, ino=ROOT_INO)
    parent = reply.get("parent_attr")
    if isinstance(parent, dict) and parent.get("ino") == root:
        reply = dict(reply, parent_attr=dict(parent, ino=ROOT_INO))
    entries = reply.get("entries")
    if isinstance(entries, list) and any(e[1].get("ino") == root for e in entries):
        reply = dict(reply, entries=[[n, from_master(root, a), c] for n, a, c in entries])
    return reply
