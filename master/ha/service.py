"""A master's high-availability duties: follow while a shadow, promote, step
down (docs/ha.md).

- :meth:`HA.run` follows the primary (:class:`master.ha.follower.Follower`)
  for as long as this master is a shadow.
- :meth:`HA.promote` (``gfs promote URL``, or the etcd election) makes a
  shadow primary: it stops following, makes durable what it received, raises
  the epoch with an ``epoch`` record, asks every chunkd to register again at
  its next heartbeat (so the new primary knows every replica within one
  heartbeat interval) and tells the old primary to step down (best effort:
  chunkds tell it too, through the epoch in their heartbeats).
- :meth:`HA.step_down`: another master was promoted; this one stops mutating
  at once and restarts as its shadow (``Role.demoted``; ``master.main``).
"""
from __future__ import annotations

import logging
from typing import Any

import httpx
import trio

from gfsfs.common import rpc
from gfsfs.common.errors import Code, GFSError

from master.ha.follower import Follower
from master.state import records

log = logging.getLogger(__name__)


class HA:
    def __init__(self, master: Any, http: httpx.AsyncClient | None) -> None:
        self.m = master
        self.http = http
        self.follower = Follower(master, http)
        master.follower_lag = self.follower.lag
        self._follow: trio.CancelScope | None = None
        self._lock = trio.Lock()

    async def run(self) -> None:
        """Follow the primary while this master is a shadow."""
        while not self.m.role.primary:
            with trio.CancelScope() as self._follow:
                await self.follower.run()
            await trio.sleep(0)
        self._follow = None

    def restart_following(self) -> None:
        """Follow ``role.primary_url`` anew (it changed)."""
        if self._follow is not None:
            self._follow.cancel()

    async def promote(self, epoch: int = 0) -> dict[str, Any]:
        """Become primary in an epoch above every epoch so far (and at least
        ``epoch``: the etcd election passes its revision)."""
        async with self._lock:
            role, oplog = self.m.role, self.m.oplog
            if role.rules():
                raise GFSError(Code.EINVAL, f"{role.url} is primary already")
            if self._follow is not None:
                self._follow.cancel()
            old = role.primary_url
            await oplog.commit(oplog.last_seq)      # what we received, durable
            role.become_primary()
            self.m.skip_reserved_handles()        # the old primary's batch may be in use
            self.m.registry.following = False
            new_epoch = max(self.m.ns.epoch + 1, epoch)
            await self.m.mutate(records.epoch(new_epoch, role.url))
            self.m.registry.resync_all()
            log.warning("promoted to primary in epoch %d at record %d (the primary was %s)",
                        new_epoch, oplog.last_seq, old or "unknown")
        if old:
            await self._tell_step_down(old, new_epoch)
        return self.status()

    async def _tell_step_down(self, old: str, epoch: int) -> None:
        if self.http is None:
            return
        try:
            await rpc.call(self.http, old, "step_down",
                           {"epoch": epoch, "primary": self.m.role.url}, timeout=2.0)
        except GFSError as exc:
            log.info("could not tell the old primary %s to step down: %s", old, exc)

    def step_down(self, epoch: int, primary: str) -> dict[str, Any]:
        """Another master was promoted in ``epoch``: stop mutating."""
        if epoch <= self.m.ns.epoch:
            raise GFSError(Code.STALE, f"epoch {epoch} is not after ours ({self.m.ns.epoch})")
        self.m.role.superseded(epoch, primary)
        return {"epoch": self.m.ns.epoch}

    def status(self) -> dict[str, Any]:
        role, oplog = self.m.role, self.m.oplog
        out: dict[str, Any] = {"url": role.url, "primary": role.rules(), "epoch": role.epoch,
                               "primary_url": role.url if role.rules() else role.primary_url,
                               "last_seq": oplog.last_seq, "durable_seq": oplog.durable_seq,
                               "shadows": self.m.shipper.status()}
        if not role.primary:
            out["following"] = self.follower.lag()
        return out
