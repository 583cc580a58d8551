"""The primary's side of op-log shipping (GFS §5.1.3: "its operation log and
checkpoints are replicated on multiple machines. A mutation to the state is
considered committed only after its log record has been flushed to disk
locally and on all master replicas").

A shadow opens ``GET /ha/follow?from=N&crc=C&shadow=URL``: one long-lived
streamed response of msgpack items, :func:`follow_stream` --

- a header ``{"epoch", "primary", "from", "chunk_size", "durable"}`` (a
  shadow takes the primary's chunk size, whatever its own config says);
- ``[seq, record]`` for every record from ``N`` on as soon as it is
  appended: the shadow's fsync overlaps the primary's. A failed write here
  (records undone, their numbers never reused) ends every stream; the
  shadow, whose last record is no longer the primary's, resyncs;
- ``{"durable": seq, "time": t}`` after a second without records, so the
  shadow knows its lag and that the primary lives.

``C`` is the CRC of the shadow's record ``N - 1`` (:func:`record_crc`). The
stream is refused with STALE ("resync") when that record is not the
primary's -- a demoted primary that logged records nobody else has -- or no
longer in memory: the shadow then takes ``GET /ha/checkpoint`` and follows
from there.

The shadow writes and fsyncs what it received, then acknowledges with
``shadow_ack {shadow, seq}``. :meth:`Shipper.wait` (``OpLog.remote``) holds a
mutation's reply until ``sync_shadows`` shadows in the *synchronous set* have
acknowledged its record. A shadow joins the set when it is caught up (within
:data:`CAUGHT_UP` records) and leaves it when its stream ends or when it fails
to acknowledge a record within ``shadow_timeout`` (a warning and a metric);
with no synchronous shadow left the primary goes on alone, or -- ``[master]
alone = "refuse"`` -- refuses mutations before applying them.
"""
from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import trio

from gfsfs.common.config import MasterConfig
from gfsfs.common.errors import Code, GFSError

from master.ha.role import Role
from master.state.oplog import OpLog, pack

log = logging.getLogger(__name__)

CAUGHT_UP = 1000          # records behind at most, to join the synchronous set
IDLE = 1.0                # seconds without records before a liveness item


@dataclass
class Shadow:
    url: str
    acked: int = 0                 # its last durable record
    streams: int = 0               # follow streams open
    in_sync: bool = False
    last_ack: float = 0.0          # monotonic
    dropped: int = 0               # times it left the synchronous set on a timeout


class Shipper:
    def __init__(self, cfg: MasterConfig, oplog: OpLog, role: Role) -> None:
        self.cfg = cfg
        self.oplog = oplog
        self.role = role
        self.shadows: dict[str, Shadow] = {}
        self._acked = trio.Event()
        self.waits = 0                 # mutations that waited for a shadow
        self.drops = 0                 # shadows dropped from the synchronous set

    # ------------------------------------------------------------ synchronous set

    def synchronous(self) -> list[Shadow]:
        return [s for s in self.shadows.values() if s.in_sync]

    def check_alone(self) -> None:
        """Before a mutation is applied: with ``alone = "refuse"``, refuse it
        while no shadow is in the synchronous set."""
        if (self.cfg.alone == "refuse" and self.cfg.sync_shadows > 0
                and not self.synchronous()):
            raise GFSError(Code.UNAVAILABLE, "no synchronous shadow master: refusing "
                                             "mutations ([master] alone = \"refuse\")")

    async def wait(self, seq: int) -> None:
        """Return once enough synchronous shadows hold record ``seq``; a
        shadow that takes longer than ``shadow_timeout`` is dropped."""
        deadline = trio.current_time() + self.cfg.shadow_timeout
        counted = False
        while True:
            sync = self.synchronous()
            needed = min(self.cfg.sync_shadows, len(sync))
            if sum(1 for s in sync if s.acked >= seq) >= needed:
                return
            if not counted:
                self.waits, counted = self.waits + 1, True
            with trio.move_on_at(deadline):
                await self._acked.wait()
                continue
            for s in sync:
                if s.acked < seq:
                    self._drop(s, f"no acknowledgement of record {seq} within "
                                  f"{self.cfg.shadow_timeout:g} s")

    def _drop(self, shadow: Shadow, why: str) -> None:
        if shadow.in_sync:
            shadow.in_sync = False
            shadow.dropped += 1
            self.drops += 1
            log.warning("shadow %s left the synchronous set: %s", shadow.url, why)
            self._wake()

    def _wake(self) -> None:
        self._acked.set()
        self._acked = trio.Event()

    def ack(self, url: str, seq: int) -> dict[str, Any]:
        shadow = self.shadows.get(url)
        if shadow is None:
            raise GFSError(Code.ENOENT, f"{url} does not follow this master")
        shadow.acked = max(shadow.acked, seq)
        shadow.last_ack = time.monotonic()
        if (not shadow.in_sync and shadow.streams
                and self.oplog.durable_seq - shadow.acked <= CAUGHT_UP):
            shadow.in_sync = True
            log.info("shadow %s is caught up (record %d): synchronous", url, shadow.acked)
        self._wake()
        return {"durable": self.oplog.durable_seq, "synchronous": shadow.in_sync}

    # ------------------------------------------------------------ streams

    def open_stream(self, url: str, start: int, crc: int | None) -> Shadow:
        """Check that a shadow may follow from ``start``; STALE ("resync")
        if its log disagrees with ours or what it needs is gone."""
        self.role.check_primary()
        if start < 1:
            raise GFSError(Code.BADREQ, "from must be at least 1")
        if start > self.oplog.last_seq + 1:
            raise GFSError(Code.STALE, f"resync: the shadow is at {start - 1}, past this "
                                       f"master's {self.oplog.last_seq}")
        if start > 1 and (crc is None or self.oplog.crc_at(start - 1) != crc):
            raise GFSError(Code.STALE, f"resync: record {start - 1} is not this master's "
                                       "(or no longer in memory)")
        if start <= self.oplog.last_seq and self.oplog.records_from(start, 1) is None:
            raise GFSError(Code.STALE, f"resync: record {start} is no longer in memory")
        shadow = self.shadows.setdefault(url, Shadow(url))
        shadow.streams += 1
        shadow.acked = max(shadow.acked, start - 1)
        return shadow

    def close_stream(self, shadow: Shadow) -> None:
        shadow.streams -= 1
        if shadow.streams == 0:
            self._drop(shadow, "its follow stream ended")

    async def follow_stream(self, shadow: Shadow, start: int) -> AsyncIterator[bytes]:
        try:
            yield pack({"epoch": self.role.epoch, "primary": self.role.url, "from": start,
                        "chunk_size": self.role.ns.chunk_size,
                        "durable": self.oplog.durable_seq})
            seq, failures = start, self.oplog.failures
            while self.role.rules() and self.oplog.failures == failures:
                found = self.oplog.records_from(seq)
                if found is None:
                    log.warning("shadow %s: record %d no longer in memory; it must resync",
                                shadow.url, seq)
                    return
                if found:
                    yield b"".join(pack([s, r]) for s, r in found)
                    seq = found[-1][0] + 1
                    continue
                changed = self.oplog.appended
                with trio.move_on_after(IDLE) as idle:
                    await changed.wait()
                if idle.cancelled_caught:
                    yield pack({"durable": self.oplog.durable_seq, "time": time.time()})
        finally:
            self.close_stream(shadow)

    def status(self) -> list[dict[str, Any]]:
        now, durable = time.monotonic(), self.oplog.durable_seq
        return [{"url": s.url, "acked": s.acked, "behind": max(0, durable - s.acked),
                 "synchronous": s.in_sync, "following": s.streams > 0,
                 "last_ack_seconds": round(now - s.last_ack, 3) if s.last_ack else None,
                 "dropped": s.dropped}
                for s in sorted(self.shadows.values(), key=lambda s: s.url)]
