"""Whether this master may mutate: its role, the epoch, the primary's URL.

A master is the *primary* or a *shadow* (GFS §5.1.3). Only the primary
mutates: every mutation passes :meth:`Role.check_primary` before it is applied
(``Master.stage``). A shadow answers NOTPRIMARY naming the primary; so does a
primary whose right to rule has lapsed -- its etcd lease may have expired while
it was stopped or cut off (``lease.held_until``, on the monotonic clock, which
keeps running through SIGSTOP), so it refuses before it learns of its successor.

The epoch lives in the op log (``records.epoch``, ``Namespace.epoch``): each
promotion raises it, every order to a chunkd carries it, and chunkds refuse
orders from an older one.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from gfsfs.common.config import MasterConfig
from gfsfs.common.errors import Code, GFSError

from master.state.namespace import Namespace

log = logging.getLogger(__name__)


class Role:
    def __init__(self, cfg: MasterConfig, ns: Namespace,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ns = ns
        self.clock = clock
        self.primary = cfg.role == "primary"
        self.url = cfg.advertise_url or f"http://{cfg.host}:{cfg.port}"
        self.port = cfg.port             # the bound port, once serving
        self.primary_url = "" if self.primary else cfg.primary_url.rstrip("/")
        # with etcd: the election, whose ``held_until`` (monotonic) is when
        # our right to lead lapses unless renewed (None: no etcd)
        self.lease: Any = None
        self.demoted = trio.Event()      # set when this primary must step down
        self.promoted = trio.Event()     # set when this master becomes primary
        if self.primary:
            self.promoted.set()

    @property
    def epoch(self) -> int:
        return self.ns.epoch

    def rules(self) -> bool:
        """Whether this master is primary right now."""
        if not self.primary:
            return False
        if self.lease is None:
            return True
        held = self.lease.held_until
        return held is not None and self.clock() < held

    def check_primary(self) -> None:
        """NOTPRIMARY (naming the primary, if known) unless :meth:`rules`."""
        if self.rules():
            return
        known = self.primary_url or (self.ns.primary if self.ns.primary != self.url else "")
        why = "a shadow master" if not self.primary else "not primary (it holds no valid etcd lease)"
        raise GFSError(Code.NOTPRIMARY,
                       f"{self.url} is {why}; the primary is {known or 'unknown'}",
                       primary=known or None)

    def reply(self) -> dict[str, Any]:
        """The ``epoch``/``primary`` every reply to a chunkd carries."""
        return {"epoch": self.ns.epoch, "primary": self.rules()}

    def superseded(self, epoch: int, primary_url: str) -> None:
        """A chunkd has seen a newer epoch than ours: another master was
        promoted. Stop mutating at once; ``demoted`` tells the master to
        restart as a shadow of the new primary."""
        if not self.primary:
            return
        log.critical("a chunkd has seen epoch %d (primary %s), newer than ours (%d): "
                     "stepping down", epoch, primary_url or "unknown", self.ns.epoch)
        self.become_shadow(primary_url)
        self.demoted.set()

    def become_shadow(self, primary_url: str) -> None:
        self.primary = False
        self.primary_url = primary_url.rstrip("/")

    def await_election(self) -> None:
        """Under etcd: not primary (whatever the config says) until elected."""
        self.primary = False
        self.primary_url = ""
        self.promoted = trio.Event()

    def become_primary(self) -> None:
        self.primary = True
        self.primary_url = ""
        self.promoted.set()
