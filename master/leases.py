"""Revoking leases (GFS §3.4, §4.3): the one way to stop a primary's writes.

A chunkd knows versions, not leases: a client holding a lease commits at the
chunk's version until the lease's ``expires_ns``. To stop that early -- a copy
for re-replication (:mod:`master.replication`), a snapshot
(:mod:`master.snapshot`) -- the master drops the lease and raises the chunk's
version (logged, then ``set_version`` on every live replica). From then on no
replica accepts a write at the old version (STALE), and the client asks for a
new lease. Replicas that miss the new version are dropped from the locations.

:class:`LeaseTable` is the registry's lease table (``ChunkRegistry.leases``),
a dict that also remembers leases dropped *before* they expired (the primary
was dropped or died, the chunk was re-placed): a client may still hold such a
lease, so a snapshot must fence those chunks too. For the first
``lease_seconds`` after a master start every chunk counts as possibly leased
(leases are soft state: the previous master's grants are unknown).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from . import records

if TYPE_CHECKING:
    from .chunks import Lease
    from .core import Master

log = logging.getLogger(__name__)


class LeaseTable(dict):  # type: ignore[type-arg]
    """handle -> Lease, remembering early-dropped leases until they expire."""

    def __init__(self, *args: Any, lease_ns: int = 60 * 10**9) -> None:
        super().__init__(*args)
        self.dropped: dict[int, int] = {}      # handle -> expires_ns of a dropped lease
        self.last: dict[int, Lease] = {}       # handle -> that dropped lease itself
        self.born_ns = time.time_ns()
        self.lease_ns = lease_ns

    def _note(self, handle: int, lease: Lease | None) -> None:
        if lease is not None and lease.expires_ns > time.time_ns():
            self.dropped[handle] = max(self.dropped.get(handle, 0), lease.expires_ns)
            self.last[handle] = lease

    def __delitem__(self, handle: int) -> None:
        self._note(handle, self.get(handle))
        super().__delitem__(handle)

    def pop(self, handle: int, *default: Any) -> Any:
        self._note(handle, self.get(handle))
        return super().pop(handle, *default)

    def maybe_held(self, handle: int, now_ns: int) -> bool:
        """Whether a client may hold a lease on ``handle`` at ``now_ns``."""
        if handle in self or now_ns < self.born_ns + self.lease_ns:
            return True
        until = self.dropped.get(handle)
        if until is None:
            return False
        if until <= now_ns:
            del self.dropped[handle]
            self.last.pop(handle, None)
            return False
        return True

    def outstanding(self, handle: int, now_ns: int) -> Lease | None:
        """The lease a client may still hold on ``handle`` (current, or dropped
        early and not expired yet), if any."""
        lease = self.get(handle)
        if lease is None:
            lease = self.last.get(handle)
        if lease is None or lease.expires_ns <= now_ns:
            if handle not in self:
                self.last.pop(handle, None)
            return None
        return lease

    def forget_dropped(self, handle: int) -> None:
        self.dropped.pop(handle, None)
        self.last.pop(handle, None)

    def fenced(self, handle: int, took: set[str]) -> None:
        """The chunkds ``took`` a new version of ``handle``: forget its dropped
        lease if that fences it (see :func:`is_fenced`); keep it otherwise."""
        lease = self.last.get(handle)
        if lease is None or is_fenced(lease, took):
            self.forget_dropped(handle)


def is_fenced(lease: Lease, took: set[str]) -> bool:
    """Whether a client holding ``lease`` can no longer get a write
    acknowledged once the chunkds in ``took`` are at a higher version: its
    primary is, or every other replica it names is (a commit needs them all)."""
    others = [h for h in lease.holders if h != lease.primary]
    return lease.primary in took or (bool(others) and all(h in took for h in others))


def install(master: Master) -> LeaseTable:
    """Make ``master.registry.leases`` a :class:`LeaseTable` (once, at start)."""
    reg = master.registry
    if not isinstance(reg.leases, LeaseTable):
        reg.leases = LeaseTable(reg.leases, lease_ns=int(master.cfg.lease_seconds * 1e9))
    return reg.leases


def maybe_leased(master: Master, handle: int, now_ns: int) -> bool:
    leases = master.registry.leases
    if isinstance(leases, LeaseTable):
        return leases.maybe_held(handle, now_ns)
    return handle in leases


async def revoke_lease(master: Master, handle: int, why: str) -> int:
    """Drop ``handle``'s lease and raise its version; the new version.

    The replicas take the new version *before* the master logs it: a master
    killed in between finds a replica newer than its record at their next
    report and adopts that version (GFS §4.5). Logging first would instead
    make every replica look stale after such a crash, and they would all be
    deleted. UNAVAILABLE (nothing changed at the master) if no live replica
    took the new version; a chunk with no live replica keeps its version.
    Callers hold the chunk's lock (``Master._chunk_lock``) or otherwise keep
    new leases from being granted meanwhile."""
    from gfsfs.errors import GFSError
    reg, ns = master.registry, master.ns
    reg.leases.pop(handle, None)
    version = ns.chunks[handle][0] + 1
    srvs = reg.replicas(handle)
    if not srvs:
        return version - 1
    ok = await master._set_version(handle, version, srvs, create=False)
    if isinstance(reg.leases, LeaseTable):
        reg.leases.fenced(handle, {s.id for s in ok})
    if not ok:
        raise GFSError("UNAVAILABLE", f"no replica of chunk {handle} took version {version} "
                                      f"(revoking its lease for {why})")
    current = ns.version(handle)
    if current is None:
        return version                      # deleted meanwhile
    if current < version:
        await master.mutate(records.set_version(handle, version))
    for srv in srvs:
        if srv not in ok:
            reg.drop_location(handle, srv.id)
    log.info("chunk %d: lease revoked and version raised to %d for %s", handle, version, why)
    return version


BATCH = 4096                    # (handle, version) pairs per set_versions RPC


async def revoke_leases(master: Master, handles: list[int], why: str) -> int:
    """:func:`revoke_lease` for many chunks at once: one ``set_versions`` RPC
    per chunkd (in batches of :data:`BATCH`) and one logged ``set_versions``
    record, in the same order (replicas first, then the log). Chunks with no
    live replica keep their version. UNAVAILABLE if some chunk's replicas all
    failed (those chunks are left as they were; the others are revoked)."""
    from gfsfs.errors import GFSError
    reg, ns = master.registry, master.ns
    want: dict[int, int] = {}
    asked: dict[int, set[str]] = {}
    holders: dict[str, list[int]] = {}
    for handle in handles:
        if handle not in ns.chunks:
            continue
        reg.leases.pop(handle, None)
        srvs = reg.replicas(handle)
        if not srvs:
            continue
        want[handle] = ns.chunks[handle][0] + 1
        master.note_granted(handle, want[handle])
        asked[handle] = {s.id for s in srvs}
        for srv in srvs:
            holders.setdefault(srv.id, []).append(handle)
    ok: dict[int, set[str]] = {h: set() for h in want}

    async def one(cid: str, batch: list[int]) -> None:
        srv = reg.servers[cid]
        try:
            reply = await master.caller(srv.addr, "set_versions",
                                        {"versions": [[h, want[h]] for h in batch]})
        except Exception as exc:
            log.warning("set_versions of %d chunks on chunkd %s failed: %s", len(batch), cid,
                        exc)
            return
        failed = {int(h) for h, _code in (reply or {}).get("failed", [])}
        for h in batch:
            if h not in failed:
                ok[h].add(cid)

    async with trio.open_nursery() as nursery:
        for cid, hs in holders.items():
            for i in range(0, len(hs), BATCH):
                nursery.start_soon(one, cid, hs[i:i + BATCH])
    if isinstance(reg.leases, LeaseTable):
        for h, cids in ok.items():
            reg.leases.fenced(h, cids)
    done = [[h, v] for h, v in want.items() if ok[h] and ns.version(h) is not None
            and ns.version(h) < v]
    if done:
        await master.mutate(records.set_versions(done))
    for h, cids in ok.items():
        if cids:
            for cid in asked[h] - cids:
                reg.drop_location(h, cid)
    lost = [h for h, cids in ok.items() if not cids]
    log.info("%d leases revoked (versions raised) for %s", len(want) - len(lost), why)
    if lost:
        raise GFSError("UNAVAILABLE", f"no replica of chunks {lost[:10]} took a new version "
                                      f"(revoking leases for {why})")
    return len(want)
