"""Re-replication and over-goal trimming (GFS §4.3, §4.5).

:class:`Replicator` is a background loop. Each round (:meth:`Replicator.run_once`)
it scans the chunk map and

- gives every chunk with fewer live replicas than its goal (the largest goal
  of the files referencing it) new replicas, by priority: fewest live replicas
  first, then chunks of live files before chunks only trash references, then
  chunks a client asked for lately (it may be waiting on them), then the most
  missing replicas. A copy is chunk-to-chunk: the master picks a
  source replica and a target chunkd (distinct, on a rack the chunk is not on
  yet when possible, most free space) and tells the *target* to fetch the chunk
  from the source (``replicate``, see :mod:`gfsfs.common.protocol.master_chunkd`); no data passes
  through the master. The new location counts once the target answers (its
  ``report_chunks`` says the same again a moment later).
- removes replicas beyond the goal (a chunkd that came back after its chunks
  were re-replicated, or a lowered goal) from the fullest servers first,
  keeping rack diversity; the chunkd deletes them on its next heartbeat reply.
  Stale replicas (older version) are deleted at ``register`` /
  ``report_chunks`` already (:meth:`master.chunks.registry.ChunkRegistry.add_replicas`).

Throttle (GFS §4.3): at most ``replication_per_chunkd`` copies involve one
chunkd (as source or target) and ``replication_max`` run in the cluster.

The scan each round starts from (:func:`master.services.queries.scan`) is the
one ``fsck`` reports from (:func:`master.services.queries.fsck`).

Copies and leases. A copy must not race a mutation: under a lease, writes go on
at the *same* version for up to ``lease_seconds``, so a copy taken meanwhile
could miss some of them and still look current. Waiting for the lease to lapse
would leave a chunk under-replicated for up to a minute after every write, so
instead, when a client may hold a lease on the chunk (``LeaseManager.maybe_leased``:
a lease in the table, one dropped early with a primary declared dead but maybe
still serving clients, or any lease in the first ``lease_seconds`` after a
master start), the copy first *revokes* the lease
and raises the chunk's version (logged, then ``set_version`` on every live
replica, under the same per-chunk lock the ``lease`` RPC takes). From then on
no replica accepts a write at the old version (commits answer STALE, the
client asks for a new lease), and any new lease raises the version again -- so
a copy that overlapped a new write ends up older than the master's version and
is not recorded (and is deleted as stale). The invariant that makes this safe:
a new location is recorded only if the master's version is still the one the
copy was made at.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import trio

from gfsfs.common.errors import GFSError

from master.chunks.registry import Chunkd, ChunkNeed, Copy
from master.core import Master
from master.chunks.leases import ChunkdCaller
from master.services.queries import scan_cooperatively
from master.services.rebalance import plan_moves

log = logging.getLogger(__name__)

COPY_TIMEOUT = 300.0          # seconds a target may take to fetch one chunk


class Replicator:
    """The master's background re-replication and trimming loop."""

    def __init__(self, master: Master, caller: ChunkdCaller | None = None,
                 period: float | None = None, grace: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.m = master
        self.caller = caller if caller is not None else master.caller
        cfg = master.cfg
        self.period = period if period is not None else min(2.0, max(0.1, cfg.heartbeat_interval / 2))
        # after a master start, chunkds need a moment to register before a chunk
        # that looks under-replicated really is
        self.grace = grace if grace is not None else cfg.heartbeat_interval * (cfg.dead_after_heartbeats + 1)
        self.clock = clock
        self.born = clock()
        self.inflight: dict[int, Copy] = {}
        self.load: Counter[str] = Counter()       # chunkd id -> copies it takes part in
        self.incoming: Counter[str] = Counter()   # chunkd id -> copies it receives
        self.copies_done = 0
        self.copies_failed = 0
        self.bytes_copied = 0
        self.trimmed = 0
        self.moved = 0                            # rebalancing/drain moves done

    # ------------------------------------------------------------ one round

    async def run_once(self, nursery: trio.Nursery | None = None) -> int:
        """Start the copies this round allows (in ``nursery``, else wait for
        them here) and trim over-goal chunks; returns how many copies started."""
        needs = await scan_cooperatively(self.m)
        self.trim(needs)
        copies = self.plan(needs) if self.clock() - self.born >= self.grace else []
        if self.clock() - self.born >= self.grace:
            copies += plan_moves(self, needs)     # drain first, then rebalancing
        if nursery is not None:
            for c in copies:
                nursery.start_soon(self._copy, c)
        elif copies:
            async with trio.open_nursery() as inner:
                for c in copies:
                    inner.start_soon(self._copy, c)
        return len(copies)

    async def run_forever(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    await self.run_once(nursery)
                except Exception:
                    log.exception("re-replication round failed")
                await trio.sleep(self.period)

    # ------------------------------------------------------------ planning

    def plan(self, needs: dict[int, ChunkNeed]) -> list[Copy]:
        """Pick (source, target) for as many under-goal chunks as the throttle
        allows, most urgent first, and reserve them."""
        cfg = self.m.cfg
        busy = self.m.chunk_locks          # (ino, index) keys a lease or allocation holds
        # a chunk being allocated or leased right now may look under-replicated
        # (some chunkds' reports arrive before the rest answered): not yet
        under = [n for n in needs.values() if 0 < len(n.live) < n.goal
                 and n.handle not in self.inflight and not any(k in busy for k in n.refs)]
        under.sort(key=lambda n: (len(n.live), n.trash_only, not self.m.is_wanted(n.handle),
                                  -n.missing, n.handle))
        out: list[Copy] = []
        now = self.clock()
        for need in under:
            if len(self.inflight) >= max(1, cfg.replication_max):
                break
            pick = self._pick(need)
            if pick is None:
                continue
            src, tgt = pick
            c = Copy(need.handle, src, tgt, need.refs[0], need.goal, now)
            self.inflight[need.handle] = c
            self.load[src.id] += 1
            self.load[tgt.id] += 1
            self.incoming[tgt.id] += 1
            out.append(c)
        return out

    def _pick(self, need: ChunkNeed) -> tuple[Chunkd, Chunkd] | None:
        per = max(1, self.m.cfg.replication_per_chunkd)
        reg = self.m.registry
        sources = [s for s in need.live if self.load[s.id] < per]
        if not sources:
            return None
        holders = set(reg.locations.get(need.handle, ()))
        racks = {s.rack for s in need.live}
        cs = reg.chunk_size
        candidates = [s for s in reg.live() if s.id not in holders and not s.draining
                      and self.load[s.id] < per and s.free_bytes > 0]
        if not candidates:
            return None

        def room(s: Chunkd) -> int:        # free space once the copies under way land
            return s.free_bytes - self.incoming[s.id] * cs

        roomy = [s for s in candidates if room(s) >= cs] or candidates
        target = min(roomy, key=lambda s: (s.rack in racks, -room(s), len(s.handles), s.id))
        # a source on the target's rack when there is one (cheaper link), least busy
        source = min(sources, key=lambda s: (s.rack != target.rack, self.load[s.id],
                                             -s.free_bytes, s.id))
        return source, target

    # ------------------------------------------------------------ copying

    async def _copy(self, c: Copy) -> None:
        try:
            version = await self._quiesce(c)
            if version is None:
                return
            if not (c.source.alive and c.target.alive
                    and c.source.id in self.m.registry.locations.get(c.handle, ())):
                return                      # the world changed while we waited
            reply = await self.caller(c.target.addr, "replicate", {
                "handle": c.handle, "version": version, "source": c.source.addr})
            self._finish(c, version, reply)
        except GFSError as exc:
            self.copies_failed += 1
            log.warning("re-replication of chunk %d from %s to %s failed: %s",
                        c.handle, c.source.id, c.target.id, exc)
        except Exception:
            self.copies_failed += 1
            log.exception("re-replication of chunk %d failed", c.handle)
        finally:
            self.inflight.pop(c.handle, None)
            for cid, counter in ((c.source.id, self.load), (c.target.id, self.load),
                                 (c.target.id, self.incoming)):
                counter[cid] -= 1
                if counter[cid] <= 0:
                    del counter[cid]

    async def _quiesce(self, c: Copy) -> int | None:
        """The version to copy at: the current one, or -- when the chunk has a
        lease -- a new one after revoking the lease (see the module doc)."""
        m, reg = self.m, self.m.registry
        async with m.chunk_lock(c.key):
            version = m.ns.version(c.handle)
            if version is None:
                return None                 # deleted meanwhile
            holders = reg.locations.get(c.handle, set())
            if ((len(reg.replicas(c.handle)) >= c.goal and not c.move)
                    or c.source.id not in holders
                    or c.target.id in holders or not c.target.alive):
                return None                 # no longer needed, or no longer possible
            # a lease dropped early (its primary was declared dead, but cut
            # off from us it may still serve clients) counts until it expires,
            # as does any lease a master before a restart may have granted:
            # writes through it would miss the new replica at the same version
            if not m.leases.maybe_leased(c.handle, time.time_ns()):
                return version
            return await m.leases.revoke(c.handle, "a copy")

    def _finish(self, c: Copy, version: int, reply: Any) -> None:
        m, reg = self.m, self.m.registry
        if isinstance(reply, dict) and isinstance(reply.get("length"), int):
            self.bytes_copied += reply["length"]
        if not c.target.alive or reg.servers.get(c.target.id) is not c.target:
            return                          # it died or re-registered: its report counts
        current = m.ns.version(c.handle)
        if current != version:
            # a new lease (or deletion) overtook the copy: the copy is stale
            log.info("chunk %d: copy on %s at v%d overtaken (now %s); deleting it",
                     c.handle, c.target.id, version, current)
            reg.pending_delete.setdefault(c.target.id, set()).add(c.handle)
            return
        delete, _newer = reg.add_replicas(c.target, [(c.handle, version)], m.ns.chunks)
        for handle in delete:
            reg.pending_delete.setdefault(c.target.id, set()).add(handle)
        self.copies_done += 1
        if c.move and c.handle in c.target.handles:
            # a move: the new replica is in place, the old one goes (the
            # version was checked above, with no await since)
            reg.drop_location(c.handle, c.source.id)
            reg.pending_delete.setdefault(c.source.id, set()).add(c.handle)
            self.moved += 1
            log.info("chunk %d v%d moved from %s to %s", c.handle, version,
                     c.source.id, c.target.id)
            return
        log.info("chunk %d v%d copied from %s to %s (%d live)", c.handle, version,
                 c.source.id, c.target.id, len(reg.replicas(c.handle)))

    # ------------------------------------------------------------ trimming

    def trim(self, needs: dict[int, ChunkNeed]) -> int:
        """Drop replicas beyond the goal, fullest servers first; returns how many.
        Chunks with a copy under way or a valid lease (a client may be writing
        through every replica it was given) wait for a later round."""
        reg = self.m.registry
        now_ns = time.time_ns()
        dropped = 0
        for need in needs.values():
            extra = len(need.live) - need.goal
            if extra <= 0 or need.handle in self.inflight:
                continue
            if reg.valid_lease(need.handle, now_ns) is not None:
                continue
            racks = Counter(s.rack for s in need.live)
            keep = list(need.live)
            for _ in range(extra):
                # a replica sharing its rack with another first (rack diversity
                # stays), then the fullest server (least free, most chunks)
                srv = min(keep, key=lambda s: (not s.draining, racks[s.rack] == 1, s.free_bytes,
                                               -len(s.handles), s.id))
                keep.remove(srv)
                racks[srv.rack] -= 1
                reg.drop_location(need.handle, srv.id)
                reg.pending_delete.setdefault(srv.id, set()).add(need.handle)
                dropped += 1
                log.info("chunk %d over goal %d: removing the replica on %s",
                         need.handle, need.goal, srv.id)
        self.trimmed += dropped
        return dropped
