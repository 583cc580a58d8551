"""Mount sessions of exports at the master's HTTP face: ``session_open`` (an
OPEN RPC: a mount shows its address, and an export's password if the export
has one) and the guard every SESSION RPC passes when a session signed it
(:mod:`master.exports.guard`). Tickets: :mod:`gfsfs.common.auth.session`.

``session_open {path, [ts, nonce, proof]}`` -> ``{ticket, key, wrapped,
root, readonly, export, maproot}``: ``path`` is the directory the mount asks
to see as its root; ``proof`` is :func:`session.open_proof` of the export's
password over path, ``ts`` (unix ms) and ``nonce`` (hex, used once). ``key``
is the session key, ``wrapped`` (:func:`session.wrap`) when a password
proved the open. No export for the path from this address (or a wrong
password): EACCES, and failed tries are limited per address (``retry``).
"""
from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import time
from typing import Any

from gfsfs.common.auth import session as sessions
from gfsfs.common.auth.attempts import Attempts
from gfsfs.common.auth.hmac import SKEW
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.rpc import caller, need, opt

from master.core import Master
from master.exports import guard
from master.exports.rules import Export, ExportTable, normpath
from master.state.namespace import ROOT_INO

log = logging.getLogger(__name__)

Req = dict[str, Any]
OPEN_TRIES = 10          # failed session opens a minute per client address


class Exports:
    """The exports of one master (``table`` None: none, sessions refused)."""

    def __init__(self, master: Master, table: ExportTable | None) -> None:
        self.m = master
        self.table = table
        self.attempts = Attempts(OPEN_TRIES)
        self.opened = 0                     # sessions opened (metrics)
        self.refused = 0                    # opens refused

    def session_key(self, kid: str, peer: str) -> bytes | None:
        """The key of ticket ``kid`` if it is good from ``peer`` under
        today's rule of its export, else None (App.session_key)."""
        secret, table = self.m.security.secret, self.table
        ticket = sessions.parse_ticket(kid)
        if secret is None or table is None or ticket is None or _ip(peer) != ticket.address:
            return None
        export = table.current(time.time()).by_name.get(ticket.export)
        if export is None or not export.allows(peer):
            return None
        return sessions.check_ticket(secret, ticket, export.fingerprint)

    def current(self) -> tuple[Export, int] | None:
        """The export and root inode of the session serving this request,
        None if the caller is not a session."""
        text = caller().mount
        if text is None or self.table is None:
            return None
        ticket = sessions.parse_ticket(text)
        export = self.table.by_name.get(ticket.export) if ticket is not None else None
        if ticket is None or export is None:        # checked at admission: cannot happen
            raise GFSError(Code.UNAUTHORIZED, "authentication required")
        return export, ticket.root

    def guarded(self, name: str, handler: Any) -> Any:
        """``handler`` with a session's requests passed through the guard."""
        @functools.wraps(handler)
        async def guarded_handler(req: Req) -> Req:
            session = self.current()
            if session is not None:
                req = guard.apply(self.m.ns, name, req, *session)
            return await handler(req)
        return guarded_handler

    # ------------------------------------------------------------ session_open

    async def session_open(self, req: Req) -> Req:
        secret, peer = self.m.security.secret, _ip(caller().peer)
        try:
            path = normpath(need(req, "path", str))
        except ValueError as exc:
            raise GFSError(Code.BADREQ, str(exc)) from None
        if secret is None:          # an open cluster: anyone may see any subtree
            return {"open": True, "root": self._root(path)}
        if self.table is None:
            raise GFSError(Code.EACCES, "this master has no exports: mount with the cluster "
                                        "secret, or ask its admin for an export")
        wait = self.attempts.allow(peer)
        if wait:
            raise GFSError(Code.EAGAIN, f"too many refused mounts from {peer}; "
                                        f"retry in {wait:.0f} s")
        table = self.table.current(time.time())
        export = table.match(peer, path, self._proven(req, table, path))
        if export is None:
            self.refused += 1
            log.warning("exports: refused a mount of %s from %s", path, peer)
            raise GFSError(Code.EACCES, f"no export allows {path} from {peer}")
        root = self._root(path)
        self.attempts.forgive(peer)
        ticket = sessions.make_ticket(secret, export.name, export.fingerprint, root, peer)
        key = sessions.key_of(secret, ticket)
        self.opened += 1
        log.info("exports: %s mounted %s (export %s%s)", peer, path, export.name,
                 ", read-only" if export.readonly else "")
        return {"ticket": ticket, "root": root, "readonly": export.readonly,
                "export": export.name, "wrapped": export.password is not None,
                "key": sessions.wrap(key, export.password, ticket)
                if export.password is not None else key,
                "maproot": list(export.maproot) if export.maproot else None}

    def _proven(self, req: Req, table: ExportTable, path: str) -> set[str]:
        """The exports whose password the request's proof shows."""
        proof = opt(req, "proof", str)
        if proof is None:
            return set()
        ts, nonce = need(req, "ts", str), need(req, "nonce", str)
        if not ts.isdigit() or not 16 <= len(nonce) <= 64 \
                or abs(time.time() - int(ts) / 1000) > SKEW:
            return set()
        verifier = self.m.security.verifier()
        proven = {e.name for e in table.exports if e.password is not None
                  and hmac.compare_digest(sessions.open_proof(e.password, path, ts, nonce),
                                          proof)}
        if proven and verifier is not None:
            verifier.remember_once(nonce, int(ts) / 1000)    # UNAUTHORIZED if replayed
        return proven

    def _root(self, path: str) -> int:
        ino, ns = ROOT_INO, self.m.ns
        for part in path.split("/")[1:] if path != "/" else []:
            ino = ns.lookup(ino, part.encode()).ino
        ns.get_dir(ino)                             # ENOTDIR if it is a file
        return ino


def _ip(peer: str) -> str:
    """``peer`` as ipaddress prints it (an IPv4-mapped IPv6 address as IPv4)."""
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
