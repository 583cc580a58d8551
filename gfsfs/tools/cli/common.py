"""What every ``gfs`` command shares: :class:`Failure` (a message for stderr,
exit status 1) and :class:`Master`, the master's RPCs with their errors turned
into failures."""
from __future__ import annotations

import errno
import os
from typing import Any

import httpx

from gfsfs.client import paths
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.masters import Masters

PROG = "gfs"


class Failure(Exception):
    """A failure to report on stderr with exit status 1."""


class Master:
    """The master's RPCs, with errors turned into :class:`Failure`: at the
    primary among the masters of ``spec`` (one URL or several, comma-separated;
    :class:`gfsfs.common.masters.Masters` follows NOTPRIMARY answers and
    skips masters that do not answer, for up to ``failover_timeout`` s)."""

    def __init__(self, http: httpx.AsyncClient, spec: str,
                 failover_timeout: float = 30.0) -> None:
        self.http = http
        self.masters = Masters(http, spec, failover_timeout)

    @property
    def url(self) -> str:
        """The master believed primary."""
        return self.masters.primary

    async def call(self, name: str, body: dict[str, Any] | None = None,
                   what: str | None = None) -> Any:
        try:
            return await self.masters.call(name, body or {})
        except GFSError as exc:
            raise Failure(describe(exc, what, self.url)) from None

    async def resolve(self, path: str, follow: bool = False) -> dict[str, Any]:
        """The Attr of ``path`` (an absolute path inside the file system);
        ``follow``: a symlink in the last component is followed too."""
        try:
            return await paths.resolve(paths.MasterLookups(self.masters), path, follow)
        except GFSError as exc:
            raise Failure(describe(exc, path, self.url)) from None
        except OSError as exc:       # ELOOP: too many symbolic links
            code = errno.errorcode.get(exc.errno or 0, "EIO")
            raise Failure(f"{path}: {os.strerror(exc.errno or errno.EIO)} ({code})") from None

    async def readdir(self, ino: int, what: str) -> list[tuple[bytes, dict[str, Any]]]:
        out: list[tuple[bytes, dict[str, Any]]] = []
        offset = 0
        while True:
            reply = await self.call("readdir", {"ino": ino, "offset": offset, "limit": 1024},
                                    what)
            entries = reply["entries"]
            if not entries:
                return out
            for name, attr, cookie in entries:
                out.append((name, attr))
                offset = cookie


def describe(exc: GFSError, what: str | None, url: str) -> str:
    if exc.code == Code.UNAVAILABLE:
        return f"cannot reach the master: {exc.message}"
    if exc.code in (Code.NOROUTE, Code.BADREQ, Code.INTERNAL) or what is None:
        return f"master {url}: {exc.code}: {exc.message}"
    return f"{what}: {os.strerror(exc.errno)} ({exc.code})"
