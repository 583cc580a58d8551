"""Leases (GFS §3.1, §3.4, §4.3): who may order the mutations of a chunk.

A write to a chunk goes through its *primary*, the replica holding a lease of
``lease_seconds`` granted by the master. A chunkd knows versions, not leases:
a client holding a lease commits at the chunk's version until the lease's
``expires_ns``. So the version is the fence:

* a new grant raises the chunk's version -- on the replicas first (their
  ``set_version``), then in the op log -- and replicas that miss it are dropped
  from the chunk's locations (they are stale from now on);
* extensions ride on the primary's heartbeats and never change the version;
* to stop a primary's writes early -- a copy for re-replication, a snapshot, a
  rename -- the master *revokes* the lease: drops it and raises the version
  (:meth:`LeaseManager.revoke`). From then on no replica accepts a write at
  the old version (STALE), and the client asks for a new lease;
* no second primary while another's lease may still be used: a grant either
  fences the previous lease (:func:`is_fenced`) or waits for it to expire.

The replicas take a new version *before* the master logs it: a master killed
in between finds a replica newer than its record at the next report and adopts
that version (GFS §4.5, :meth:`LeaseManager.may_adopt`). Logging first would
make every replica look stale after such a crash, and they would all be deleted.

:class:`LeaseTable` is the lease table (``handle -> Lease``). It also remembers
leases dropped *before* they expired (the primary was dropped or died, the
chunk was re-placed): a client may still hold such a lease, so a copy or a
snapshot must fence those chunks too. For the first ``lease_seconds`` after a
master start every chunk counts as possibly leased (leases are soft state: the
previous master's grants are unknown). The chunk registry holds the same table
and drops the leases of replicas and chunkds it forgets
(:class:`master.chunks.registry.ChunkRegistry`); :class:`LeaseManager` is everything
else. Lease logic lives here and nowhere else.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from gfsfs.common.config import MasterConfig
from gfsfs.common.errors import Code, GFSError

from master.state import records
from master.state.namespace import Namespace, Record

if TYPE_CHECKING:
    from master.chunks.registry import Chunkd, ChunkRegistry

log = logging.getLogger(__name__)

# (chunkd addr, rpc name, body) -> reply; raises GFSError
ChunkdCaller = Callable[[str, str, dict[str, Any]], Awaitable[Any]]
# logs one record and returns once it is durable (Master.mutate)
RecordLogger = Callable[[Record], Awaitable[Any]]

BATCH = 4096                    # (handle, version) pairs per set_versions RPC


@dataclass
class Lease:
    primary: str
    expires_ns: int
    # the chunkds holding the chunk when the lease was granted (primary
    # included): a client with this lease commits only if every one of them
    # applies, so once all but the primary are at a higher version the lease
    # can no longer get a write acknowledged
    holders: tuple[str, ...] = ()


def is_fenced(lease: Lease, took: set[str]) -> bool:
    """Whether a client holding ``lease`` can no longer get a write
    acknowledged once the chunkds in ``took`` are at a higher version: its
    primary is, or every other replica it names is (a commit needs them all)."""
    others = [h for h in lease.holders if h != lease.primary]
    return lease.primary in took or (bool(others) and all(h in took for h in others))


class LeaseTable(Mapping[int, Lease]):
    """handle -> Lease, remembering early-dropped leases until they expire."""

    def __init__(self, lease_ns: int) -> None:
        self._held: dict[int, Lease] = {}
        self._dropped: dict[int, int] = {}     # handle -> expires_ns of a dropped lease
        self._last: dict[int, Lease] = {}      # handle -> that dropped lease itself
        self.born_ns = time.time_ns()
        self.lease_ns = lease_ns

    def __getitem__(self, handle: int) -> Lease:
        return self._held[handle]

    def __iter__(self) -> Iterator[int]:
        return iter(self._held)

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, handle: object) -> bool:
        return handle in self._held

    def get(self, handle: int,  # type: ignore[override]
            default: Lease | None = None) -> Lease | None:
        return self._held.get(handle, default)

    def put(self, handle: int, lease: Lease) -> None:
        self._held[handle] = lease

    def drop(self, handle: int) -> None:
        """Forget ``handle``'s lease; a client may still hold it until it
        expires, so until then it is remembered as dropped."""
        lease = self._held.pop(handle, None)
        if lease is not None and lease.expires_ns > time.time_ns():
            self._dropped[handle] = max(self._dropped.get(handle, 0), lease.expires_ns)
            self._last[handle] = lease

    def drop_primary(self, cid: str) -> None:
        """:meth:`drop` every lease whose primary is chunkd ``cid``."""
        for handle in [h for h, lease in self._held.items() if lease.primary == cid]:
            self.drop(handle)

    def clear(self) -> None:
        """Forget the held leases at once, not remembering them as dropped."""
        self._held.clear()

    def maybe_held(self, handle: int, now_ns: int) -> bool:
        """Whether a client may hold a lease on ``handle`` at ``now_ns``."""
        if handle in self._held or now_ns < self.born_ns + self.lease_ns:
            return True
        until = self._dropped.get(handle)
        if until is None:
            return False
        if until <= now_ns:
            del self._dropped[handle]
            self._last.pop(handle, None)
            return False
        return True

    def outstanding(self, handle: int, now_ns: int) -> Lease | None:
        """The lease a client may still hold on ``handle`` (current, or dropped
        early and not expired yet), if any."""
        lease = self._held.get(handle)
        if lease is None:
            lease = self._last.get(handle)
        if lease is None or lease.expires_ns <= now_ns:
            if handle not in self._held:
                self._last.pop(handle, None)
            return None
        return lease

    def fenced(self, handle: int, took: set[str]) -> None:
        """The chunkds ``took`` a new version of ``handle``: forget its dropped
        lease if that fences it (see :func:`is_fenced`); keep it otherwise."""
        lease = self._last.get(handle)
        if lease is None or is_fenced(lease, took):
            self._dropped.pop(handle, None)
            self._last.pop(handle, None)


class LeaseManager:
    """Grants, extends and revokes the leases of chunks (see the module doc).

    Callers hold the chunk's lock (``Master.chunk_lock``) around a grant or a
    revocation, or otherwise keep new leases from being granted meanwhile."""

    MAX_EXTEND = 65536          # handles one heartbeat may ask to extend

    def __init__(self, cfg: MasterConfig, ns: Namespace, registry: ChunkRegistry,
                 caller: ChunkdCaller, log_record: RecordLogger) -> None:
        self.cfg = cfg
        self.ns = ns
        self.registry = registry
        self.table = registry.leases
        self.caller = caller
        self.log_record = log_record
        # handle -> the highest version this master asked a chunkd to take: a
        # report above it (or, for a chunk not granted since start-up, above
        # the logged version + 1) claims a version nobody granted
        self.granted: dict[int, int] = {}
        self.refused_versions = 0       # such reports, refused
        self.waits = 0                  # grants that waited for an unfenced lease to expire
        self.extensions = 0             # leases extended at their primary's heartbeat

    @property
    def lease_ns(self) -> int:
        return int(self.cfg.lease_seconds * 1e9)

    def maybe_leased(self, handle: int, now_ns: int) -> bool:
        """Whether a client may hold a lease on ``handle`` (:class:`LeaseTable`)."""
        return self.table.maybe_held(handle, now_ns)

    # ------------------------------------------------------------ grants

    async def acquire(self, handle: int, avoid: frozenset[str] | set[str]) -> None:
        """The lease a write to existing chunk ``handle`` needs: the current
        one, extended, or a new grant (``avoid``: see ``Master.lease``)."""
        reg = self.registry
        now = time.time_ns()
        lease = reg.valid_lease(handle, now)
        if (lease is not None and lease.primary in avoid
                and any(s.id not in avoid for s in reg.replicas(handle))):
            lease = None                # regrant: another primary
        if lease is not None and not self._holders_intact(handle, lease):
            # a replica the lease named is gone (dead, stale, dropped):
            # it may have missed mutations, so the version goes up
            # before more are made, or it would come back looking current
            lease = None
        if lease is not None:           # the primary keeps it: extend
            lease.expires_ns = now + self.lease_ns
        else:
            await self.grant(handle, avoid)

    async def grant(self, handle: int, avoid: frozenset[str] | set[str] = frozenset()) -> None:
        """A new lease on ``handle``: version raised on its live replicas (the
        first that takes it, not in ``avoid``, is primary), then logged."""
        srvs = self.registry.replicas(handle)
        srvs.sort(key=lambda s: s.id in avoid)      # the primary is the first that takes it
        if not srvs:
            raise GFSError(Code.UNAVAILABLE, f"no live replica of chunk {handle}")
        # a lease a client may still hold (its primary unreachable, declared
        # dead, or avoided by the client)
        prev = self.table.outstanding(handle, time.time_ns())
        version = self.ns.chunks[handle][0] + 1
        ok = await self.set_version(handle, version, srvs, create=False)
        for srv in srvs:
            if srv not in ok:
                self.registry.drop_location(handle, srv.id)
        if not ok:
            raise GFSError(Code.UNAVAILABLE, f"no replica of chunk {handle} took version {version}")
        current = self.ns.version(handle)
        if current is not None and current < version:
            await self.log_record(records.set_version(handle, version))
        if prev is not None:
            await self._await_expiry(handle, prev, {s.id for s in ok})
        self.settle(handle, ok)

    def _holders_intact(self, handle: int, lease: Lease) -> bool:
        locs = self.registry.locations.get(handle, ())
        return all(h in locs and self.registry.servers[h].alive for h in lease.holders)

    async def _await_expiry(self, handle: int, prev: Lease, took: set[str]) -> None:
        """GFS §3.1: no second primary while another's lease may still be
        used. The new version fences ``prev`` if its primary took it, or every
        other replica it names did (its commits need them all); otherwise wait
        for ``prev`` to expire. Called with the chunk's lock held."""
        if is_fenced(prev, took):
            return
        wait = (prev.expires_ns - time.time_ns()) / 1e9
        if wait > 0:
            log.warning("chunk %d: the lease of unreachable primary %s is not fenced; "
                        "waiting %.1fs for it to expire before a new grant", handle,
                        prev.primary, wait)
            self.waits += 1
            await trio.sleep(wait)

    def settle(self, handle: int, ok: list[Chunkd]) -> None:
        """Record the replicas that took the version; the first is the primary."""
        self.registry.set_locations(handle, [s.id for s in ok if s.alive])
        if self.ns.version(handle) is None:     # the file went away meanwhile
            self.registry.collect_garbage([handle])
            raise GFSError(Code.ENOENT, f"chunk {handle} was deleted")
        primary = next((s for s in ok if s.alive), None)
        if primary is None:
            raise GFSError(Code.UNAVAILABLE, f"chunk {handle}: replicas died")
        self.table.put(handle, Lease(primary.id, time.time_ns() + self.lease_ns,
                                     tuple(s.id for s in ok if s.alive)))

    def reply(self, handle: int) -> dict[str, Any]:
        """What a client is told of ``handle``'s lease."""
        lease = self.table[handle]
        replicas = self.registry.replicas(handle)
        primary = self.registry.servers[lease.primary]
        return {"handle": handle, "version": self.ns.chunks[handle][0],
                "primary": primary.replica(),
                "secondaries": [s.replica() for s in replicas if s.id != primary.id],
                "expires_ns": lease.expires_ns}

    def extend(self, cid: str, handles: list[int]) -> list[int]:
        """Lease extensions riding on a heartbeat (GFS §3.1): each of
        ``handles`` whose current, unexpired lease is held by chunkd ``cid``
        gets ``lease_seconds`` from now; the handles extended. Never a new
        grant, never a version change: a lease that lapsed or moved is not
        revived (the client asks for a new one)."""
        reg = self.registry
        srv = reg.servers.get(cid)
        if srv is None or not srv.alive:
            return []
        now = time.time_ns()
        until = now + self.lease_ns
        done = []
        for handle in handles[:self.MAX_EXTEND]:
            lease = reg.valid_lease(handle, now)
            if lease is not None and lease.primary == cid:
                if lease.expires_ns < until:
                    lease.expires_ns = until
                done.append(handle)
        self.extensions += len(done)
        return done

    # ------------------------------------------------------------ versions

    async def set_version(self, handle: int, version: int, srvs: list[Chunkd], create: bool,
                          extra: dict[str, Any] | None = None,
                          errors: list[GFSError] | None = None) -> list[Chunkd]:
        """``set_version`` on each of ``srvs`` (``create``: a new chunk); the
        chunkds that accepted it, in the order given. ``extra`` goes into each
        request, the failures into ``errors``."""
        self.note_granted(handle, version)
        done: set[str] = set()
        # a chunkd that does not answer within the time it takes to be declared
        # dead (e.g. SIGSTOPped) counts as failed: a lease must not wait on it
        bound = max(2.0, self.cfg.heartbeat_interval * self.cfg.dead_after_heartbeats)

        async def one(srv: Chunkd) -> None:
            try:
                with trio.fail_after(bound):
                    await self.caller(srv.addr, "set_version",
                                      {"handle": handle, "version": version, "create": create,
                                       **(extra or {})})
                done.add(srv.id)
            except trio.TooSlowError:
                log.warning("set_version %d v%d on chunkd %s: no answer in %.1fs",
                            handle, version, srv.id, bound)
            except Exception as exc:
                log.warning("set_version %d v%d on chunkd %s failed: %s",
                            handle, version, srv.id, exc)
                if errors is not None and isinstance(exc, GFSError):
                    errors.append(exc)

        async with trio.open_nursery() as nursery:
            for srv in srvs:
                nursery.start_soon(one, srv)
        return [s for s in srvs if s.id in done]

    def note_granted(self, handle: int, version: int) -> None:
        """``version`` of chunk ``handle`` is about to be sent to chunkds."""
        if version > self.granted.get(handle, 0):
            self.granted[handle] = version

    def may_adopt(self, cid: str, handle: int, version: int) -> bool:
        """Whether a reported ``version`` above ours can come from a grant of
        ours: one this master is making or made, or -- for a chunk it has not
        granted since it started -- the one step a master killed between
        ``set_version`` on the replicas and its log record leaves behind."""
        current = self.ns.version(handle)
        if current is None:
            self.granted.pop(handle, None)
            return False
        ceiling = self.granted.get(handle, current + 1)
        if version <= ceiling:
            self.note_granted(handle, version)
            return True
        self.refused_versions += 1
        log.warning("chunkd %s reports chunk %d at v%d, but no version above v%d was ever "
                    "granted: refused (not adopted, not counted as a replica)", cid, handle,
                    version, ceiling)
        self.registry.drop_location(handle, cid)
        return False

    # ------------------------------------------------------------ revocation

    async def revoke(self, handle: int, why: str) -> int:
        """Drop ``handle``'s lease and raise its version; the new version.

        Replicas first, then the log (see the module doc). UNAVAILABLE
        (nothing changed at the master) if no live replica took the new
        version; a chunk with no live replica keeps its version."""
        reg, ns = self.registry, self.ns
        self.table.drop(handle)
        version = ns.chunks[handle][0] + 1
        srvs = reg.replicas(handle)
        if not srvs:
            return version - 1
        ok = await self.set_version(handle, version, srvs, create=False)
        self.table.fenced(handle, {s.id for s in ok})
        if not ok:
            raise GFSError(Code.UNAVAILABLE, f"no replica of chunk {handle} took version {version} "
                                          f"(revoking its lease for {why})")
        current = ns.version(handle)
        if current is None:
            return version                      # deleted meanwhile
        if current < version:
            await self.log_record(records.set_version(handle, version))
        for srv in srvs:
            if srv not in ok:
                reg.drop_location(handle, srv.id)
        log.info("chunk %d: lease revoked and version raised to %d for %s", handle, version,
                 why)
        return version

    async def revoke_many(self, handles: list[int], why: str) -> int:
        """:meth:`revoke` for many chunks at once: one ``set_versions`` RPC
        per chunkd (in batches of :data:`BATCH`) and one logged ``set_versions``
        record, in the same order (replicas first, then the log). Chunks with no
        live replica keep their version. UNAVAILABLE if some chunk's replicas all
        failed (those chunks are left as they were; the others are revoked);
        otherwise how many chunks were revoked."""
        want, asked, holders = self._plan_revocations(handles)
        ok: dict[int, set[str]] = {h: set() for h in want}
        async with trio.open_nursery() as nursery:
            for cid, hs in holders.items():
                for i in range(0, len(hs), BATCH):
                    nursery.start_soon(self._set_versions, cid, hs[i:i + BATCH], want, ok)
        for h, cids in ok.items():
            self.table.fenced(h, cids)
        ns = self.ns
        done = [[h, v] for h, v in want.items() if ok[h] and ns.version(h) is not None
                and ns.version(h) < v]
        if done:
            await self.log_record(records.set_versions(done))
        for h, cids in ok.items():
            if cids:
                for cid in asked[h] - cids:
                    self.registry.drop_location(h, cid)
        lost = [h for h, cids in ok.items() if not cids]
        log.info("%d leases revoked (versions raised) for %s", len(want) - len(lost), why)
        if lost:
            raise GFSError(Code.UNAVAILABLE, f"no replica of chunks {lost[:10]} took a new "
                                          f"version (revoking leases for {why})")
        return len(want)

    def _plan_revocations(self, handles: list[int]
                          ) -> tuple[dict[int, int], dict[int, set[str]], dict[str, list[int]]]:
        """Drop the leases of ``handles``; (handle -> new version, handle ->
        chunkds asked, chunkd id -> its handles) for those with live replicas."""
        reg, ns = self.registry, self.ns
        want: dict[int, int] = {}
        asked: dict[int, set[str]] = {}
        holders: dict[str, list[int]] = {}
        for handle in handles:
            if handle not in ns.chunks:
                continue
            self.table.drop(handle)
            srvs = reg.replicas(handle)
            if not srvs:
                continue
            want[handle] = ns.chunks[handle][0] + 1
            self.note_granted(handle, want[handle])
            asked[handle] = {s.id for s in srvs}
            for srv in srvs:
                holders.setdefault(srv.id, []).append(handle)
        return want, asked, holders

    async def _set_versions(self, cid: str, batch: list[int], want: dict[int, int],
                            ok: dict[int, set[str]]) -> None:
        """One ``set_versions`` RPC; the handles chunkd ``cid`` took go into ``ok``."""
        srv = self.registry.servers[cid]
        try:
            reply = await self.caller(srv.addr, "set_versions",
                                      {"versions": [[h, want[h]] for h in batch]})
        except Exception as exc:
            log.warning("set_versions of %d chunks on chunkd %s failed: %s", len(batch), cid,
                        exc)
            return
        failed = {int(h) for h, _code in (reply or {}).get("failed", [])}
        for h in batch:
            if h not in failed:
                ok[h].add(cid)
