"""Chunk servers, replica locations, placement and leases: the master's soft state.

Nothing here is persisted (GFS §2.6.2): locations are rebuilt from ``register``
and ``report_chunks``; leases simply lapse when the master restarts (a new grant
raises the chunk version, so an old primary's writes fail as STALE).

Concurrency invariant: every method is synchronous; callers do not await
between reading this state and changing it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import trio

from gfsfs.common.errors import Code, GFSError
from gfsfs.common.validate import wire_sum

from master.chunks.leases import Lease, LeaseTable

log = logging.getLogger(__name__)


@dataclass
class Chunkd:
    id: str
    addr: str
    rack: str
    capacity_bytes: int
    used_bytes: int
    free_bytes: int
    last_heartbeat: float
    chunk_count: int = 0
    alive: bool = True
    handles: set[int] = field(default_factory=set)
    draining: bool = False            # `gfs chunkd drain`: no new replicas, moved off
    allocated: list[float] = field(default_factory=list)   # when chunks were placed here

    def replica(self) -> dict[str, str]:
        return {"id": self.id, "addr": self.addr}


@dataclass
class ChunkNeed:
    """One chunk's replication state in a scan (:func:`master.services.queries.scan`)."""
    handle: int
    goal: int
    live: list[Chunkd]
    trash_only: bool                       # only files in trash reference it
    refs: list[tuple[int, int]] = field(default_factory=list)   # (ino, index)

    @property
    def missing(self) -> int:
        return self.goal - len(self.live)


@dataclass
class Copy:
    """A replica copy planned by re-replication or a move (master.services.replication)."""
    handle: int
    source: Chunkd
    target: Chunkd
    key: tuple[int, int]                   # (ino, index): the master's per-chunk lock
    goal: int
    started: float
    move: bool = False                     # rebalancing/drain: drop the source replica after


class ChunkRegistry:
    """Chunkd id -> Chunkd; handle -> chunkd ids holding the current version."""

    def __init__(self, chunk_size: int, heartbeat_interval: float, dead_after: int,
                 leases: LeaseTable, clock: Callable[[], float] = time.monotonic) -> None:
        self.chunk_size = chunk_size
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.clock = clock
        self.servers: dict[str, Chunkd] = {}
        self.locations: dict[int, set[str]] = {}
        # the lease table (master.chunks.leases): a lease goes with its primary or replica
        self.leases = leases
        self.pending_delete: dict[str, set[int]] = {}
        # for fsck: replicas found stale (handle -> id -> (version, when)) or
        # reported corrupt (handle -> id -> when), forgotten after a while
        self.stale_seen: dict[int, dict[str, tuple[int, float]]] = {}
        self.corrupt_seen: dict[int, dict[str, float]] = {}
        self.draining: set[str] = set()    # ids being drained (kept across re-registration)
        # a chunk placed on a chunkd counts as a full chunk of its free space
        # for this long (it is filled before the heartbeats show it)
        self.alloc_window = 2 * heartbeat_interval
        # chunkds asked to register again at their next heartbeat (a shadow
        # just promoted: their full chunk lists, not what it pieced together)
        self.resync: set[str] = set()
        # on a shadow: a replica of a chunk its namespace does not know yet
        # (the chunkd's report overtook the record) is kept, not deleted
        self.following = False

    # ------------------------------------------------------------ membership

    def register(self, cid: str, addr: str, rack: str, capacity: int, used: int, free: int,
                 chunks: Iterable[tuple[int, int]], versions: Mapping[int, list[int]]
                 ) -> tuple[list[int], list[tuple[int, int]]]:
        """(handles the chunkd must delete, (handle, version) newer than ours)."""
        old = self.servers.get(cid)
        if old is not None:
            self._forget_replicas(old)
        srv = Chunkd(cid, addr, rack, capacity, used, free, self.clock(),
                     draining=cid in self.draining)
        self.servers[cid] = srv
        self.pending_delete.pop(cid, None)
        self.resync.discard(cid)
        delete, newer = self.add_replicas(srv, chunks, versions)
        srv.chunk_count = len(srv.handles)
        log.info("chunkd %s registered at %s (rack %s): %d chunks, %d to delete",
                 cid, addr, rack, len(srv.handles), len(delete))
        return delete, newer

    def add_replicas(self, srv: Chunkd, chunks: Iterable[tuple[int, int]],
                     versions: Mapping[int, list[int]]
                     ) -> tuple[list[int], list[tuple[int, int]]]:
        delete, newer = [], []
        for handle, version in chunks:
            entry = versions.get(handle)
            if entry is not None and version < entry[0] and handle in srv.handles:
                # an old report (e.g. "created at v1") overtaken by a version
                # change this chunkd already took (set_version succeeded there,
                # which is how it is a known holder): not a stale replica
                continue
            if entry is None and self.following:
                self.locations.setdefault(handle, set()).add(srv.id)
                srv.handles.add(handle)     # its record is on its way (a shadow)
                continue
            if entry is None or version < entry[0]:
                delete.append(handle)       # garbage, or a stale replica
                if entry is not None:
                    self.stale_seen.setdefault(handle, {})[srv.id] = (version, self.clock())
                self.drop_location(handle, srv.id)
                continue
            if version > entry[0]:
                newer.append((handle, version))
            self.locations.setdefault(handle, set()).add(srv.id)
            srv.handles.add(handle)
        return delete, newer

    def heartbeat(self, cid: str, capacity: int, used: int, free: int,
                  chunk_count: int) -> tuple[list[int], bool]:
        """(handles to delete, whether the chunkd must register again)."""
        srv = self.servers.get(cid)
        if srv is None or not srv.alive or cid in self.resync:
            return [], True
        srv.capacity_bytes, srv.used_bytes, srv.free_bytes = capacity, used, free
        srv.chunk_count = chunk_count
        srv.last_heartbeat = self.clock()
        return sorted(self.pending_delete.pop(cid, ())), False

    def resync_all(self) -> None:
        """Every known chunkd registers again at its next heartbeat."""
        self.resync = set(self.servers)

    def check_liveness(self) -> list[str]:
        """Declare dead every chunkd silent for ``dead_after`` intervals."""
        limit = self.clock() - self.heartbeat_interval * self.dead_after
        dead = [s for s in self.servers.values() if s.alive and s.last_heartbeat < limit]
        for srv in dead:
            log.warning("chunkd %s (%s) missed %d heartbeats: dead", srv.id, srv.addr,
                        self.dead_after)
            srv.alive = False
            self._forget_replicas(srv)
            self.pending_delete.pop(srv.id, None)
        return [s.id for s in dead]

    def _forget_replicas(self, srv: Chunkd) -> None:
        for handle in srv.handles:
            locs = self.locations.get(handle)
            if locs is not None:
                locs.discard(srv.id)
                if not locs:
                    del self.locations[handle]
        srv.handles = set()
        self.leases.drop_primary(srv.id)

    def drop_location(self, handle: int, cid: str) -> None:
        locs = self.locations.get(handle)
        if locs is not None:
            locs.discard(cid)
            if not locs:
                del self.locations[handle]
        srv = self.servers.get(cid)
        if srv is not None:
            srv.handles.discard(handle)
        lease = self.leases.get(handle)
        if lease is not None and lease.primary == cid:
            self.leases.drop(handle)

    def set_locations(self, handle: int, ids: Iterable[str]) -> None:
        for cid in list(self.locations.get(handle, ())):
            self.drop_location(handle, cid)
        for cid in ids:
            self.locations.setdefault(handle, set()).add(cid)
            self.servers[cid].handles.add(handle)

    def collect_garbage(self, handles: Iterable[int]) -> None:
        """Chunks no file references: queue their deletion on their holders."""
        for handle in handles:
            self.leases.drop(handle)
            for cid in self.locations.pop(handle, set()):
                self.pending_delete.setdefault(cid, set()).add(handle)
                srv = self.servers.get(cid)
                if srv is not None:
                    srv.handles.discard(handle)

    def note_corrupt(self, handle: int, cid: str) -> None:
        self.corrupt_seen.setdefault(handle, {})[cid] = self.clock()

    def prune_events(self, existing: set[int], ttl: float) -> None:
        """Forget stale/corrupt sightings older than ``ttl`` or of deleted chunks."""
        limit = self.clock() - ttl
        for table in (self.stale_seen, self.corrupt_seen):
            for handle in list(table):
                seen = table[handle]
                for cid in [c for c, v in seen.items()
                            if (v[1] if isinstance(v, tuple) else v) < limit]:
                    del seen[cid]
                if not seen or handle not in existing:
                    del table[handle]

    # ------------------------------------------------------------ queries

    def live(self) -> list[Chunkd]:
        return [s for s in self.servers.values() if s.alive]

    def replicas(self, handle: int) -> list[Chunkd]:
        """Live chunkds holding the current version, emptiest first."""
        srvs = [self.servers[c] for c in self.locations.get(handle, ())]
        return sorted((s for s in srvs if s.alive), key=lambda s: (-s.free_bytes, s.id))

    def place(self, goal: int) -> list[Chunkd]:
        """Up to ``goal`` distinct live chunkds for a new chunk: emptiest first,
        one per rack before doubling up on a rack."""
        live = [s for s in self.live() if not s.draining]
        if not live:
            raise GFSError(Code.UNAVAILABLE, "no chunk servers are alive")
        free = {s.id: self.placeable(s) for s in live}
        roomy = [s for s in live if free[s.id] >= self.chunk_size]
        pool = roomy or [s for s in live if free[s.id] > 0]
        if not pool:
            raise GFSError(Code.ENOSPC, "every chunk server is full")
        pool.sort(key=lambda s: (-free[s.id], s.id))
        chosen: list[Chunkd] = []
        racks: set[str] = set()
        for srv in pool:
            if len(chosen) < goal and srv.rack not in racks:
                chosen.append(srv)
                racks.add(srv.rack)
        for srv in pool:
            if len(chosen) < goal and srv not in chosen:
                chosen.append(srv)
        now = self.clock()
        for srv in chosen:
            srv.allocated.append(now)
        return chosen

    def placeable(self, srv: Chunkd) -> int:
        """Free bytes for placement: the heartbeat's figure less a whole chunk
        for each chunk placed there recently (it has not shown up in ``used``
        yet), so a nearly full chunkd is not handed more chunks than fit."""
        limit = self.clock() - self.alloc_window
        srv.allocated = [t for t in srv.allocated if t >= limit]
        return srv.free_bytes - len(srv.allocated) * self.chunk_size

    def valid_lease(self, handle: int, now_ns: int) -> Lease | None:
        lease = self.leases.get(handle)
        if lease is None or lease.expires_ns <= now_ns:
            return None
        srv = self.servers.get(lease.primary)
        if srv is None or not srv.alive or handle not in srv.handles:
            return None
        return lease

    def totals(self) -> dict[str, int]:
        live = self.live()
        return {"total_bytes": wire_sum(s.capacity_bytes for s in live),
                "free_bytes": wire_sum(s.free_bytes for s in live),
                "used_bytes": wire_sum(s.used_bytes for s in live),
                "chunkds": len(live)}



class LivenessMonitor:
    """Background loop: declares chunkds dead after missed heartbeats."""

    def __init__(self, registry: ChunkRegistry) -> None:
        self.registry = registry

    def run_once(self) -> list[str]:
        return self.registry.check_liveness()

    async def run_forever(self) -> None:
        while True:
            await trio.sleep(self.registry.heartbeat_interval / 2)
            self.run_once()
