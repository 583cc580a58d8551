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
    from master.core import Master
    from master.services.replication import Replicator

log = logging.getLogger(__name__)


def chunk_lengths(master: Master) -> dict[int, int]:
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


def move_budget(rep: Replicator) -> int:
    """How many moves this round may start: ``rebalance_moves`` less the moves
    under way, and no more than ``replication_max`` leaves for all copies."""
    m = rep.m
    budget = max(1, m.cfg.rebalance_moves) - sum(1 for c in rep.inflight.values() if c.move)
    return min(budget, max(1, m.cfg.replication_max) - len(rep.inflight))


def plan_moves(rep: Replicator, needs: dict[int, ChunkNeed]) -> list[Copy]:
    """This round's moves, reserved in ``rep`` like its copies: everything off
    draining chunkds first, then rebalancing (see the module doc)."""
    budget = move_budget(rep)
    if budget <= 0:
        return []
    planner = MovePlanner(rep, needs, budget)
    if not planner.targets:
        return []
    if not planner.drain():             # the budget is spent
        return planner.out
    if not planner.rebalance():         # rebalancing is off, or one target only
        return planner.out
    if planner.out:
        log.info("rebalance: %d moves planned (%s)", len(planner.out),
                 ", ".join(f"{c.handle}:{c.source.id}->{c.target.id}"
                           for c in planner.out[:8]))
    return planner.out


class MovePlanner:
    """One round of :func:`plan_moves`: the disk use of every live chunkd (by
    the bytes of the chunks it holds, moves under way counted as done), and
    the moves planned so far (``out``, at most ``budget``)."""

    def __init__(self, rep: Replicator, needs: dict[int, ChunkNeed], budget: int) -> None:
        m, reg = rep.m, rep.m.registry
        self.rep, self.needs, self.budget = rep, needs, budget
        self.per = max(1, m.cfg.replication_per_chunkd)
        self.threshold = m.cfg.rebalance_threshold
        self.busy = m.chunk_locks
        self.cs = reg.chunk_size
        self.out: list[Copy] = []
        self.now = rep.clock()
        self.live = reg.live()
        self.targets = [s for s in self.live if not s.draining]
        self.lengths: dict[int, int] = {}
        self.used: dict[str, int] = {}
        if self.targets:
            self.lengths = chunk_lengths(m)
            self.used = self._usage()

    def _usage(self) -> dict[str, int]:
        lengths, cs = self.lengths, self.cs
        used = {s.id: sum(lengths.get(h, 0) for h in s.handles) for s in self.live}
        for c in self.rep.inflight.values():       # count moves under way as done
            if c.move:
                n = lengths.get(c.handle, cs)
                used[c.source.id] = used.get(c.source.id, 0) - n
                used[c.target.id] = used.get(c.target.id, 0) + n
        return used

    @staticmethod
    def cap(s: Chunkd) -> int:
        return max(1, s.capacity_bytes)

    def util(self, s: Chunkd) -> float:
        return self.used[s.id] / self.cap(s)

    def movable(self, handle: int) -> ChunkNeed | None:
        need = self.needs.get(handle)
        if (need is None or handle in self.rep.inflight
                or any(k in self.busy for k in need.refs)):
            return None
        if len(need.live) < need.goal and any(not s.draining for s in need.live):
            return None                   # under goal: re-replication's job first
        return need

    def best_target(self, need: ChunkNeed, source: Chunkd,
                    below: float | None) -> Chunkd | None:
        """The chunkd to move ``need`` to from ``source``: not a holder, with
        room, on a new rack if possible, least used; with ``below``, only one
        whose use stays at most that after the move."""
        rep, cs = self.rep, self.cs
        holders = {s.id for s in need.live}
        racks = {s.rack for s in need.live if s is not source}
        n = self.lengths.get(need.handle, cs)
        cands = [s for s in self.targets if s.id not in holders and rep.load[s.id] < self.per
                 and s.free_bytes - rep.incoming[s.id] * cs >= n
                 and self.used[s.id] + n <= self.cap(s)]
        if below is not None:
            cands = [s for s in cands if self.util(s) + n / self.cap(s) <= below]
        if not cands:
            return None
        return min(cands, key=lambda s: (s.rack in racks, self.util(s), s.id))

    def add(self, need: ChunkNeed, source: Chunkd, target: Chunkd) -> None:
        rep = self.rep
        c = Copy(need.handle, source, target, need.refs[0], need.goal, self.now, move=True)
        rep.inflight[need.handle] = c
        rep.load[source.id] += 1
        rep.load[target.id] += 1
        rep.incoming[target.id] += 1
        n = self.lengths.get(need.handle, self.cs)
        self.used[source.id] -= n
        self.used[target.id] += n
        self.out.append(c)

    def drain(self) -> bool:
        """Moves off draining chunkds; False when they used up the budget."""
        for src in sorted((s for s in self.live if s.draining), key=lambda s: s.id):
            for handle in sorted(src.handles):
                if len(self.out) >= self.budget:
                    return False
                if self.rep.load[src.id] >= self.per:
                    break
                need = self.movable(handle)
                if need is None:
                    continue
                tgt = self.best_target(need, src, None)
                if tgt is not None:
                    self.add(need, src, tgt)
        return True

    def rebalance(self) -> bool:
        """Moves from the fullest to the emptiest while their use differs by
        more than the threshold; False when rebalancing is off (threshold 0)
        or there are fewer than two targets."""
        if self.threshold <= 0 or len(self.targets) < 2:
            return False
        tried: set[str] = set()
        while len(self.out) < self.budget:
            pool = [s for s in self.targets if s.id not in tried]
            if len(pool) < 2:
                break
            src = max(pool, key=lambda s: (self.util(s), s.id))
            low = min(self.util(s) for s in self.targets)
            if (self.util(src) - low <= self.threshold or self.rep.load[src.id] >= self.per
                    or not self.move_from(src)):
                tried.add(src.id)
        return True

    def move_from(self, src: Chunkd) -> bool:
        """Plan moving one of ``src``'s replicas (the largest first) to a chunkd
        that stays below it after the move; whether one was planned."""
        for handle in sorted(src.handles, key=lambda h: (-self.lengths.get(h, 0), h)):
            need = self.movable(handle)
            if need is None or self.lengths.get(handle, 0) == 0:
                continue
            n = self.lengths.get(handle, self.cs)
            tgt = self.best_target(need, src, self.util(src) - n / self.cap(src))
            if tgt is None or self.util(src) - self.util(tgt) <= self.threshold:
                continue
            self.add(need, src, tgt)
            return True
        return False
