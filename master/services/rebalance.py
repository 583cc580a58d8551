"""Draining and rebalancing: replicas *moved* between chunkds (copy, then drop
the old one), planned each round of the :class:`master.services.replication.Replicator`
after re-replication, which always comes first.

- **Drain** (``gfs chunkd drain ID``, the ``drain`` RPC): a draining chunkd gets
  no new chunks (placement and re-replication skip it) and every replica it
  holds is moved to another chunkd (on a rack the chunk is not on yet when
  possible, most room first). When its last needed replica has moved it holds
  nothing a file needs; it can then be stopped. Draining is the master's soft
  state, kept while the chunkd re-registers, forgotten when the master restarts
  (run the command again).
- **Rebalancing**: when the disk use (bytes of the chunks the master places on
  a chunkd / its capacity) of the fullest live chunkd exceeds the emptiest's by
  more than ``[master] rebalance_threshold``, a replica the emptiest does not
  hold is moved from the fullest to it. A chunkd that just joined thus fills
  gradually.

Throttle: at most ``[master] rebalance_moves`` moves in flight in the cluster,
and each counts against ``replication_per_chunkd`` on its source and target
like a re-replication copy. A move is a copy with ``move=True``
(:meth:`Replicator._copy`): the same lease revocation and version check make it
safe under writes, and the source replica is dropped only once the target holds
the chunk at the current version.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from master.chunks.registry import Chunkd, ChunkNeed, Copy

if TYPE_CHECKING:
    from master.services.replication import Replicator

log = logging.getLogger(__name__)


def chunk_lengths(master) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """handle -> bytes it holds, from the file sizes (the largest over files)."""
    cs = master.ns.chunk_size
    out: dict[int, int] = {}
    for inode in master.ns.inodes.values():
        if not inode.chunks:
            continue
        for index, handle in inode.chunks.items():
            n = min(cs, max(0, inode.size - index * cs))
            if n > out.get(handle, -1):
                out[handle] = n
    return out


def plan_moves(rep: Replicator, needs: dict[int, ChunkNeed]) -> list[Copy]:
    m, reg = rep.m, rep.m.registry
    budget = max(1, m.cfg.rebalance_moves) - sum(1 for c in rep.inflight.values() if c.move)
    budget = min(budget, max(1, m.cfg.replication_max) - len(rep.inflight))
    if budget <= 0:
        return []
    per = max(1, m.cfg.replication_per_chunkd)
    busy = m.chunk_locks
    cs = reg.chunk_size
    out: list[Copy] = []
    now = rep.clock()
    live = reg.live()
    targets_all = [s for s in live if not s.draining]
    if not targets_all:
        return []
    lengths = chunk_lengths(m)
    used = {s.id: sum(lengths.get(h, 0) for h in s.handles) for s in live}
    for c in rep.inflight.values():       # count moves under way as done
        if c.move:
            n = lengths.get(c.handle, cs)
            used[c.source.id] = used.get(c.source.id, 0) - n
            used[c.target.id] = used.get(c.target.id, 0) + n

    def cap(s: Chunkd) -> int:
        return max(1, s.capacity_bytes)

    def util(s: Chunkd) -> float:
        return used[s.id] / cap(s)

    def movable(handle: int) -> ChunkNeed | None:
        need = needs.get(handle)
        if need is None or handle in rep.inflight or any(k in busy for k in need.refs):
            return None
        if len(need.live) < need.goal and any(not s.draining for s in need.live):
            return None                   # under goal: re-replication's job first
        return need

    def best_target(need: ChunkNeed, source: Chunkd, below: float | None) -> Chunkd | None:
        holders = {s.id for s in need.live}
        racks = {s.rack for s in need.live if s is not source}
        n = lengths.get(need.handle, cs)
        cands = [s for s in targets_all if s.id not in holders and rep.load[s.id] < per
                 and s.free_bytes - rep.incoming[s.id] * cs >= n
                 and used[s.id] + n <= cap(s)]
        if below is not None:
            cands = [s for s in cands if util(s) + n / cap(s) <= below]
        if not cands:
            return None
        return min(cands, key=lambda s: (s.rack in racks, util(s), s.id))

    def add(need: ChunkNeed, source: Chunkd, target: Chunkd) -> None:
        c = Copy(need.handle, source, target, need.refs[0], need.goal, now, move=True)
        rep.inflight[need.handle] = c
        rep.load[source.id] += 1
        rep.load[target.id] += 1
        rep.incoming[target.id] += 1
        n = lengths.get(need.handle, cs)
        used[source.id] -= n
        used[target.id] += n
        out.append(c)

    # 1. drain: everything off draining chunkds
    for src in sorted((s for s in live if s.draining), key=lambda s: s.id):
        for handle in sorted(src.handles):
            if len(out) >= budget:
                return out
            if rep.load[src.id] >= per:
                break
            need = movable(handle)
            if need is None:
                continue
            tgt = best_target(need, src, None)
            if tgt is not None:
                add(need, src, tgt)
    # 2. rebalance: fullest -> emptiest while they differ by more than the threshold
    threshold = m.cfg.rebalance_threshold
    if threshold <= 0 or len(targets_all) < 2:
        return out
    tried: set[str] = set()
    while len(out) < budget:
        pool = [s for s in targets_all if s.id not in tried]
        if len(pool) < 2:
            break
        src = max(pool, key=lambda s: (util(s), s.id))
        low = min(util(s) for s in targets_all)
        if util(src) - low <= threshold or rep.load[src.id] >= per:
            tried.add(src.id)
            continue
        picked = False
        for handle in sorted(src.handles, key=lambda h: (-lengths.get(h, 0), h)):
            need = movable(handle)
            if need is None or lengths.get(handle, 0) == 0:
                continue
            # only to a chunkd that stays below the source after the move
            n = lengths.get(handle, cs)
            tgt = best_target(need, src, util(src) - n / cap(src))
            if tgt is None or util(src) - util(tgt) <= threshold:
                continue
            add(need, src, tgt)
            picked = True
            break
        if not picked:
            tried.add(src.id)
    if out:
        log.info("rebalance: %d moves planned (%s)", len(out),
                 ", ".join(f"{c.handle}:{c.source.id}->{c.target.id}" for c in out[:8]))
    return out
