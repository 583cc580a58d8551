"""Lazy deletion (GFS §4.4): files whose last name is gone wait in trash for
``[master] trash_time`` seconds -- still readable and writable by whoever has
them open -- and are then purged; their chunks become garbage that the chunkds
delete when heartbeat replies tell them to."""
from __future__ import annotations

import logging
import time

import trio

from .core import Master

log = logging.getLogger(__name__)


class TrashPurger:
    def __init__(self, master: Master, batch: int = 1000) -> None:
        self.master = master
        self.batch = batch

    @property
    def period(self) -> float:
        return max(0.5, min(60.0, self.master.cfg.trash_time / 4))

    async def run_once(self, now_ns: int | None = None) -> int:
        """Purge what has waited long enough; returns how many inodes went."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        cutoff = now_ns - int(self.master.cfg.trash_time * 1e9)
        expired = self.master.ns.expired_trash(cutoff)[: self.batch]
        if expired:
            await self.master.mutate({"op": "purge", "inos": expired})
            log.info("purged %d files from trash", len(expired))
        return len(expired)

    async def run_forever(self) -> None:
        while True:
            await trio.sleep(self.period)
            try:
                await self.run_once()
            except Exception:
                log.exception("trash purge failed")
