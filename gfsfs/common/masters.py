"""Following the primary master (issue 13): the masters a client knows and
the one it believes primary.

A client is given one master or several (``[client] master_url``, ``gfs
--master``, ``$GFS_MASTER``, a mount's MASTER_URL: comma-separated URLs, see
:func:`parse`). Only the primary mutates (GFS §5.1.3); a shadow serves reads
and refuses every mutation with NOTPRIMARY, naming the primary when it knows
it. :meth:`Masters.call` sends every RPC to the believed primary, and when
that fails (:func:`verdict`):

- NOTPRIMARY: nothing was applied. Believe the primary it names (added to the
  list if new), else the next master of the list; send again.
- UNAVAILABLE met on the way (no connection, a reset, a timeout: ``err.addr``
  is set): believe the next master; send again if the request may be sent
  twice (``resend``: it changes nothing, or it carries a request id ``rid``
  the master applies once and answers a retry as the first attempt), or if
  it never left (``err.unsent``).
- UNAVAILABLE a master answered (it could not reach the chunkds): ask it
  again, if ``resend``, at most ``retries`` attempts in all.
- anything else is the answer: raised.

A switch to a master not yet asked in this call is tried at once; otherwise
each retry waits :data:`gfsfs.common.retry.MASTER` (0.2 s doubling to 1 s).
Once ``failover_timeout`` seconds have passed since the call's first failure
the last error is raised (UNAVAILABLE: EIO; NOTPRIMARY: EROFS), so a call
takes at most about that plus one ``request_timeout``.

Concurrent calls that fail at the same master switch it once: only a call
that failed at the believed primary moves it. The first switch after a
master answered is logged at WARNING ("master X is not primary; now using
Y"); while none answers, going round the list is logged at DEBUG, and the
master that answers at last is named at INFO.

Reads are answered by whichever master is believed primary: a client handed
a shadow first reads from it until its first mutation moves it on (a
read-only mount may stay on a shadow for good).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from gfsfs.common import retry, rpc
from gfsfs.common.errors import Code, GFSError

log = logging.getLogger(__name__)

# Master RPCs that may be sent twice: they change nothing, or changing it
# again changes nothing more (a lease is extended, a size raised to a max).
RESENDABLE = frozenset({
    "lookup", "getattr", "readdir", "readlink", "getxattr", "listxattr", "statfs", "chunks",
    "lease", "append_lease", "extend", "fileinfo", "cluster_status", "fsck", "dump_metadata",
    "trash_list", "checkpoint", "setgoal", "drain", "session_open"})

SWITCH = "switch"       # believe another master, send again
AGAIN = "again"         # ask the same master again
RAISE = "raise"         # the error is the answer


def normalize(url: str) -> str:
    """One master's ``scheme://host:port``: from ``HOST:PORT``, ``http://...``
    or ``gfs://HOST:PORT/...`` (a path is ignored). ValueError without a host."""
    url = url.strip()
    parts = urlsplit(url if "://" in url else "http://" + url)
    scheme = "http" if parts.scheme == "gfs" else parts.scheme
    if not parts.netloc:
        raise ValueError(f"no master address in {url!r}")
    return f"{scheme}://{parts.netloc}"


def parse(spec: str | Sequence[str]) -> list[str]:
    """The masters of ``"URL[,URL...]"`` (or a list of URLs), each
    :func:`normalize`d, in order, without repeats. ValueError if none."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for item in items:
        if item.strip() and (url := normalize(item)) not in urls:
            urls.append(url)
    if not urls:
        raise ValueError(f"no master address in {spec!r}")
    return urls


def verdict(err: GFSError, resend: bool) -> str:
    """What a call does after ``err`` (:data:`SWITCH`, :data:`AGAIN` or
    :data:`RAISE`); ``resend``: the request may be applied twice harmlessly."""
    if err.code == Code.NOTPRIMARY:
        return SWITCH
    if err.code != Code.UNAVAILABLE:
        return RAISE
    if err.addr is not None:                # we could not reach it
        return SWITCH if resend or err.unsent else RAISE
    return AGAIN if resend else RAISE


class Masters:
    """The masters of ``spec`` (:func:`parse`) and the one believed primary
    (at first the first), with the failover rule of this module."""

    def __init__(self, http: httpx.AsyncClient, spec: str | Sequence[str],
                 failover_timeout: float = 30.0, retries: int = 5) -> None:
        self.http = http
        self.urls = parse(spec)
        self.primary = self.urls[0]
        self.failover_timeout = failover_timeout
        self.retries = max(1, retries)
        self.settled = True         # no switch since a master last answered
        self.quiet = 0              # switches logged at DEBUG since then

    def spec(self) -> str:
        """The list as ``"URL,URL"``, the believed primary first (what a later
        client of the same masters starts from)."""
        return ",".join([self.primary] + [u for u in self.urls if u != self.primary])

    def switch(self, failed: str, err: GFSError) -> str:
        """The master to ask after ``failed`` answered ``err`` (NOTPRIMARY or
        unreachable): the primary ``err`` names, else the one after ``failed``
        in the list. Moves the believed primary only if it still is
        ``failed`` (another call may have moved it already)."""
        if self.primary != failed:
            return self.primary
        named = _named_primary(err, failed)
        if named is not None and named not in self.urls:
            self.urls.append(named)
        if named is None:       # the believed primary is always in the list
            nxt = self.urls[(self.urls.index(failed) + 1) % len(self.urls)]
        else:
            nxt = named
        if nxt != failed:
            why = "is not primary" if err.code == Code.NOTPRIMARY else "does not answer"
            log.log(logging.WARNING if self.settled else logging.DEBUG,
                    "master %s %s; now using %s (%s)", failed, why, nxt, err.message)
            self.quiet += not self.settled
            self.settled = False
            self.primary = nxt
        return nxt

    def prefer(self, url: str) -> None:
        """Believe ``url`` is the primary (a shadow said so: the mount's first
        ``statfs`` went to a shadow listed first)."""
        try:
            url = normalize(url)
        except ValueError:
            return
        if url not in self.urls:
            self.urls.append(url)
        if url != self.primary:
            log.info("master %s is a shadow; the primary is %s", self.primary, url)
            self.primary = url

    def answered(self, url: str) -> None:
        """``url`` answered a call: the next switch is news again."""
        if not self.settled and self.quiet:
            log.info("master %s answers (%d more switches were logged at DEBUG)",
                     url, self.quiet)
        self.settled, self.quiet = True, 0

    async def call(self, name: str, body: dict[str, Any] | None = None,
                   timeout: float | None = None) -> Any:
        """``name`` with ``body`` at the believed primary, failing over as the
        module says; the reply, or the last error. A body with a ``rid`` may
        be sent again whatever the RPC, as may :data:`RESENDABLE` ones."""
        body = body or {}
        resend = name in RESENDABLE or "rid" in body
        tried: set[str] = set()
        first_failure: float | None = None
        again = pauses = 0
        while True:
            url = self.primary
            tried.add(url)
            try:
                reply = await rpc.call(self.http, url, name, body, timeout)
                self.answered(url)
                return reply
            except GFSError as exc:
                if exc.addr is None and exc.code != Code.NOTPRIMARY:
                    self.answered(url)          # the primary answered, with an error
                what = verdict(exc, resend)
                now = trio.current_time()
                first_failure = now if first_failure is None else first_failure
                again += what == AGAIN
                if (what == RAISE or again >= self.retries
                        or now - first_failure >= self.failover_timeout):
                    raise
                nxt = self.switch(url, exc) if what == SWITCH else url
                if nxt in tried:
                    await retry.MASTER.pause(pauses, log, "master %s: %s: %s; retrying at %s",
                                             url, name, exc, nxt)
                    pauses += 1


def _named_primary(err: GFSError, failed: str) -> str | None:
    """The primary a NOTPRIMARY answer names, if it names one other than ``failed``."""
    if err.code != Code.NOTPRIMARY or not err.primary:
        return None
    try:
        named = normalize(err.primary)
    except ValueError:
        return None
    return None if named == failed else named
