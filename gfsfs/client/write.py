"""The write half of the client (GFS §3.1): buffering, data push, commit at the
primary, then ``extend`` at the master.

Per inode a :class:`~gfsfs.client.chunkio.WriteBuffer` collects dirty extents. When it
holds ``upload_chunk_size`` bytes a *batch* (the extents taken out of the
buffer) is sent in the background, at most BATCHES_IN_FLIGHT per inode at a time; a
batch overlapping one still in flight waits for it, so later writes always land
last. flush waits for every batch; fsync also makes every replica fsync(2) the
chunks written since the last fsync. A failed batch is remembered and raised by
the next write/flush/fsync of the inode (like the kernel's writeback errors).

Each batch is cut into pieces inside one chunk of at most :data:`PIECE`
bytes. For each piece: ``lease`` (cached until it expires), ``PUT /data/<id>``
to the primary with the secondaries as the chain, ``POST /rpc/commit`` at the
primary; on a retryable failure the lease is dropped and the piece retried with
a fresh one, up to ``retries`` times.
"""
from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import trio

from gfsfs.common import retry, rpc
from gfsfs.client.chunkio import Batch, Extent, split_range
from gfsfs.client.types import RETRYABLE, Attr, ChunkLoc, Ctx, InodeState, Lease, replica
from gfsfs.common.auth import tokens
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import CHAIN_HEADER, INLINE_MAX

if TYPE_CHECKING:
    from gfsfs.client.core import Client

log = logging.getLogger(__name__)
TOKEN_MARGIN = 30.0     # seconds before its token expires that a sync asks for a fresh one

MIB = 1 << 20
PIECE = 8 * MIB             # largest piece pushed to a chunkd at once
PARALLEL_PIECES = 4         # pieces of one batch in flight
LEASE_MARGIN_NS = 5 * 10**9  # a lease this close to expiry is renewed first
UNREACHABLE_TTL = 30.0      # seconds a chunkd we could not reach is avoided as primary
FALLOC_KEEP_SIZE, FALLOC_PUNCH_HOLE, FALLOC_ZERO_RANGE = 0x01, 0x02, 0x10
FALLOC_KNOWN = FALLOC_KEEP_SIZE | FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE
ZEROS = bytes(MIB)


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a nursery's group: a GFSError if there is one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                walk(sub)
        else:
            leaves.append(exc)

    walk(group)
    if any(isinstance(exc, trio.Cancelled) for exc in leaves):
        return group                   # never swallow a cancellation
    for exc in leaves:
        if isinstance(exc, GFSError):
            return exc
    return leaves[0] if leaves else group


class Writer:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.cfg = client.cfg
        # chunkd id -> when this client last failed to reach it as a primary;
        # lease requests ask the master for another primary meanwhile
        self.unreachable: dict[str, float] = {}

    # ------------------------------------------------------------ buffering

    async def write(self, ino: int, offset: int, data: bytes) -> int:
        st = self.client.state(ino)
        self._raise_error(st)
        st.wbuf.add(offset, data)
        st.gen += 1
        st.pending_end = max(st.pending_end, offset + len(data))
        if st.wbuf.nbytes >= self.cfg.upload_chunk_size:
            await self._start_batch(ino, st, sync=False)
        return len(data)

    @staticmethod
    def _raise_error(st: InodeState) -> None:
        if st.error is not None:
            err, st.error = st.error, None
            raise err

    async def flush(self, ino: int, sync: bool = False) -> None:
        st = self.client.inodes.get(ino)
        if st is None:
            return
        if st.wbuf:
            await self._start_batch(ino, st, sync=sync)
        while st.inflight:
            await st.inflight[0].done.wait()
        if sync and st.unsynced:
            await self._sync(ino, st)
        self._raise_error(st)

    async def discard(self, ino: int) -> None:
        """The file is being thrown away: drop what is buffered for ``ino``
        unsent, and wait for what is being sent, whose failure (the file may
        be gone by then) is not reported."""
        st = self.client.inodes.get(ino)
        if st is None:
            return
        st.wbuf.take()
        while st.inflight:
            await st.inflight[0].done.wait()
        st.error = None
        st.pending_end = 0

    async def _start_batch(self, ino: int, st: InodeState, sync: bool) -> None:
        extents = st.wbuf.take()
        entry = Batch(extents[0].start, extents[-1].end, trio.Event(), extents)
        st.inflight.append(entry)          # readers and flushers see it from now on
        try:
            await st.slots.acquire()
            for other in list(st.inflight):
                if other is entry:
                    break
                if other.lo < entry.hi and entry.lo < other.hi:
                    await other.done.wait()
        except BaseException:
            st.inflight.remove(entry)
            entry.done.set()
            raise
        self.client.nursery.start_soon(self._run_batch, ino, st, extents, sync, entry)

    async def _run_batch(self, ino: int, st: InodeState, extents: list[Extent], sync: bool,
                         entry: Batch) -> None:
        try:
            await self.send(ino, extents, sync)
        except Exception as exc:
            # a full quota is the writer's to hear of (EDQUOT at its next write
            # or close), not a fault of ours
            expected = isinstance(exc, GFSError) and exc.code == Code.QUOTA
            (log.warning if expected else log.error)("write-back of inode %d failed: %s",
                                                     ino, exc)
            st.error = exc if isinstance(exc, GFSError) else GFSError(Code.EIO, str(exc))
            self.client.note_error(ino, st.error)
        finally:
            st.slots.release()
            st.inflight.remove(entry)
            entry.done.set()
            if not st.inflight and not st.wbuf and st.pending_end <= max(st.size, 0):
                st.pending_end = 0

    # ------------------------------------------------------------ sending

    async def send(self, ino: int, extents: list[Extent], sync: bool) -> None:
        """Write ``extents`` to the chunkds, then tell the master the new size."""
        cs = await self.client.get_chunk_size()
        jobs: list[tuple[int, int, memoryview]] = []
        for ext in extents:
            view = memoryview(ext.data)
            for p in split_range(ext.start, len(ext.data), cs, PIECE):
                rel = p.file_off - ext.start
                jobs.append((p.index, p.chunk_off, view[rel:rel + p.length]))
        limiter = trio.CapacityLimiter(PARALLEL_PIECES)
        end = max(e.end for e in extents)
        # a batch of one small piece may have the master extend the file in the
        # same call that creates its chunk (see write_piece)
        size_hint = end if len(jobs) == 1 else None
        extended: list[Attr] = []

        async def one(index: int, chunk_off: int, data: memoryview) -> None:
            async with limiter:
                attr = await self.write_piece(ino, index, chunk_off, data, sync, size_hint)
                if attr is not None:
                    extended.append(attr)

        try:
            async with trio.open_nursery() as nursery:
                for job in jobs:
                    nursery.start_soon(one, *job)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        attr = extended[0] if extended else await self.client.call(
            "extend", {"ino": ino, "size": end, "mtime_ns": time.time_ns()})
        st = self.client.state(ino)
        st.gen += 1
        st.size = max(st.size, int(attr.get("size", end)))

    async def lease(self, ino: int, index: int) -> Lease:
        st = self.client.state(ino)
        lease = st.leases.get(index)
        if lease is None or lease.expires_ns - LEASE_MARGIN_NS < time.time_ns():
            lease, _ = await self._new_lease(ino, index)
        return lease

    async def _new_lease(self, ino: int, index: int,
                         first: dict[str, Any] | None = None) -> tuple[Lease, dict[str, Any]]:
        """A lease from the master; ``first``: the piece to write if the master
        has to create the chunk (the reply then says ``written``)."""
        body: dict[str, Any] = {"ino": ino, "index": index, **(first or {})}
        avoid = self._unreachable()
        if avoid:       # chunkds we cannot reach: not as primary, please
            body["avoid"] = avoid
        r = await self.client.call("lease", body)
        log.debug("lease inode %d chunk %d: handle %s version %s%s", ino, index, r["handle"],
                  r["version"], " (written)" if r.get("written") else "")
        lease = Lease(int(r["handle"]), int(r["version"]), replica(r["primary"]),
                      tuple(replica(s) for s in r.get("secondaries", [])),
                      int(r["expires_ns"]), r.get("token"))
        st = self.client.state(ino)
        st.gen += 1
        st.leases[index] = lease
        st.write_token = lease.token
        st.locs[index] = (ChunkLoc(lease.handle, lease.version,
                                   (lease.primary, *lease.secondaries), lease.token),
                          time.monotonic() + self.cfg.location_timeout)
        return lease, r

    def _maybe_new_chunk(self, st: InodeState, index: int, cs: int) -> bool:
        """Whether chunk ``index`` probably does not exist yet (the file ends
        before it and we hold no lease on it)."""
        return index not in st.leases and 0 <= st.size <= index * cs

    def _unreachable(self) -> list[str]:
        """Chunkd ids this client failed to reach in the last UNREACHABLE_TTL s."""
        limit = time.monotonic() - UNREACHABLE_TTL
        for cid in [c for c, t in self.unreachable.items() if t < limit]:
            del self.unreachable[cid]
        return sorted(self.unreachable)

    def drop_lease(self, ino: int, index: int) -> None:
        st = self.client.state(ino)
        st.leases.pop(index, None)
        st.locs.pop(index, None)

    async def write_piece(self, ino: int, index: int, chunk_off: int, data: memoryview,
                          sync: bool, size_hint: int | None = None) -> Attr | None:
        """Write one piece; the file's attributes when the master extended it
        to ``size_hint`` (the piece created its chunk), else None."""
        st = self.client.state(ino)
        payload = bytes(data)
        log.debug("write piece inode %d chunk %d at %d, %d bytes", ino, index, chunk_off,
                  len(payload))
        last: GFSError | None = None
        for attempt in range(max(1, self.cfg.retries)):
            if (attempt == 0 and len(payload) <= INLINE_MAX
                    and self._maybe_new_chunk(st, index, await self.client.get_chunk_size())):
                first: dict[str, Any] = {"offset": chunk_off, "data": payload, "sync": sync}
                if size_hint is not None:
                    first.update(size=size_hint, mtime_ns=time.time_ns())
                lease, reply = await self._new_lease(ino, index, first)
                if reply.get("written"):        # the chunk was created holding it
                    self._written(st, lease, index, sync)
                    return reply.get("attr")
            else:
                lease = await self.lease(ino, index)
            try:
                body = {"handle": lease.handle, "version": lease.version, "offset": chunk_off,
                        "secondaries": [s.addr for s in lease.secondaries], "sync": sync}
                if len(payload) <= INLINE_MAX:
                    body["data"] = payload          # small: in the commit, no push chain
                else:
                    body["data_id"] = secrets.token_hex(16)
                    await self.push(lease, body["data_id"], payload)
                await rpc.call(self.client.http, lease.primary.addr, "commit", body,
                               timeout=self.client.chunkd_timeout, token=lease.token)
            except GFSError as exc:
                if exc.code not in RETRYABLE:
                    raise
                last = exc
                if exc.addr == lease.primary.addr:
                    # we could not reach the primary itself (not a chain failure)
                    self.unreachable[lease.primary.id] = time.monotonic()
                self.drop_lease(ino, index)
                await retry.MUTATION.pause(attempt, log, "write of inode %d chunk %d (try %d) "
                                           "failed: %s", ino, index, attempt + 1, exc)
                continue
            self._written(st, lease, index, sync)
            return None
        raise GFSError(Code.EIO, f"inode {ino} chunk {index}: write failed ({last})")

    @staticmethod
    def _written(st: InodeState, lease: Lease, index: int, sync: bool) -> None:
        """Note the replicas an fsync must reach."""
        if not sync:
            _, addrs = st.unsynced.setdefault(lease.handle, (index, set()))
            addrs.update(r.addr for r in (lease.primary, *lease.secondaries))

    async def push(self, lease: Lease, data_id: str, payload: bytes) -> None:
        """Send the bytes once: to the primary, which forwards down the chain."""
        chain = ",".join(s.addr for s in lease.secondaries)
        url = f"{lease.primary.addr}/data/{data_id}"
        headers = {CHAIN_HEADER: chain, "content-type": rpc.OCTETS}
        if lease.token:
            headers[tokens.HEADER] = lease.token
        with retry.reaching(lease.primary.addr):
            resp = await self.client.http.put(url, content=payload, headers=headers,
                                              timeout=self.client.chunkd_timeout)
        reply = rpc.decode_reply(resp.status_code, resp.content)
        if reply.get("length") != len(payload):
            raise GFSError(Code.EIO, f"push of {len(payload)} bytes stored {reply.get('length')}")

    async def _sync(self, ino: int, st: InodeState) -> None:
        """fsync(2) every chunk written since the last fsync, on every replica
        that still holds it. A replica that fails is dropped from the list once
        the master no longer names it (dead, or stale after a new lease); until
        then the sync is retried, and gives EIO after ``retries`` attempts."""
        for attempt in range(max(1, self.cfg.retries)):
            await self._fresh_write_token(ino, st)
            failed = await self._sync_once(st)
            if not failed:
                st.unsynced.clear()
                return
            await retry.MUTATION.pause(attempt, log, "fsync of inode %d: %s failed (try %d)",
                                       ino, ", ".join(failed), attempt + 1)
            await self._forget_departed(ino, st, set(failed))
        raise GFSError(Code.EIO, f"fsync of inode {ino} failed at {', '.join(failed)}")

    async def _fresh_write_token(self, ino: int, st: InodeState) -> None:
        """A sync shows the newest lease's token; if it is (nearly) expired,
        a lease on one of the chunks to sync brings a fresh one."""
        if st.write_token is None or not st.unsynced \
                or tokens.expires(st.write_token) > time.time() + TOKEN_MARGIN:
            return
        index = next(iter(st.unsynced.values()))[0]
        try:
            await self.lease(ino, index)
        except GFSError as exc:         # the sync then fails on its own, and says why
            log.info("no fresh token for the fsync of inode %d: %s", ino, exc)

    async def _sync_once(self, st: InodeState) -> list[str]:
        by_addr: dict[str, list[int]] = {}
        for handle, (_, addrs) in st.unsynced.items():
            for addr in addrs:
                by_addr.setdefault(addr, []).append(handle)
        done: set[str] = set()
        failed: list[str] = []

        async def one(addr: str, handles: list[int]) -> None:
            try:
                await rpc.call(self.client.http, addr, "sync", {"handles": handles},
                               timeout=self.client.chunkd_timeout, token=st.write_token)
                done.add(addr)
            except GFSError as exc:
                log.warning("sync at %s failed: %s", addr, exc)
                failed.append(addr)

        async with trio.open_nursery() as nursery:
            for addr, handles in by_addr.items():
                nursery.start_soon(one, addr, handles)
        # a replica we cannot reach ourselves may still be reachable from the
        # others (a partition between us and it): have one relay the sync
        for addr in list(failed):
            for relay in sorted(done):
                try:
                    await rpc.call(self.client.http, relay, "sync",
                                   {"handles": by_addr[addr], "relay": addr},
                                   timeout=self.client.chunkd_timeout * 2,
                                   token=st.write_token)
                except GFSError as exc:
                    log.info("sync of %s relayed by %s failed: %s", addr, relay, exc)
                    continue
                failed.remove(addr)
                done.add(addr)
                break
        for _, addrs in st.unsynced.values():
            addrs -= done
        return failed

    async def _forget_departed(self, ino: int, st: InodeState, failed: set[str]) -> None:
        """Drop failed addresses the master no longer lists as replicas."""
        for handle, (index, addrs) in list(st.unsynced.items()):
            if not addrs & failed:
                continue
            self.client.drop_location(ino, index)
            try:
                loc = await self.client.locate(ino, index)
            except GFSError:
                continue
            current = {r.addr for r in loc.replicas} if loc is not None else set()
            if loc is None or loc.handle != handle:
                current = set()
            addrs &= current | (addrs - failed)

    # ------------------------------------------------------------ fallocate

    async def fallocate(self, ino: int, mode: int, offset: int, length: int) -> None:
        """Mode 0 grows the file to cover the range (sparse: the space is not
        reserved, as in JuiceFS); KEEP_SIZE alone changes nothing; PUNCH_HOLE
        and ZERO_RANGE make the range read as zeros (the chunks it touches
        get zeros written; holes stay holes), ZERO_RANGE also grows the file
        unless KEEP_SIZE. COLLAPSE_RANGE, INSERT_RANGE and the rest:
        EOPNOTSUPP."""
        if mode & ~FALLOC_KNOWN:
            raise GFSError(Code.ENOTSUP, f"fallocate mode {mode:#x} is not supported")
        if offset < 0 or length <= 0 or (mode & FALLOC_PUNCH_HOLE and (
                not mode & FALLOC_KEEP_SIZE or mode & FALLOC_ZERO_RANGE)):
            raise GFSError(Code.EINVAL, f"fallocate mode {mode:#x} at {offset}+{length}")
        await self.flush(ino)
        st = self.client.state(ino)
        st.gen += 1
        size = int((await self.client.call("getattr", {"ino": ino}))["size"])
        end = offset + length
        if mode & (FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE) and offset < size:
            await self._zero(ino, offset, min(end, size))
        if not mode & FALLOC_KEEP_SIZE and end > size:
            await self.truncate(ino, end, None)
        st.gen += 1

    async def _zero(self, ino: int, start: int, end: int) -> None:
        """Zeros over ``[start, end)`` of the chunks that exist, through the
        write buffer (at most BATCHES_IN_FLIGHT batches in memory)."""
        cs = await self.client.get_chunk_size()
        for p in split_range(start, end - start, cs):
            if await self.client.locate(ino, p.index) is None:
                continue                       # a hole reads as zeros already
            for pos in range(p.file_off, p.file_off + p.length, len(ZEROS)):
                await self.write(ino, pos, ZEROS[:min(len(ZEROS), p.file_off + p.length - pos)])
        await self.flush(ino)

    # ------------------------------------------------------------ truncate

    async def truncate(self, ino: int, size: int, ctx: Ctx | None, **changes: Any) -> Attr:
        """Flush, cut the chunk the new size ends in (so growing later reads
        zeros), then set the size at the master."""
        client = self.client
        await self.flush(ino)
        st = client.state(ino)
        st.gen += 1
        cs = await client.get_chunk_size()
        old = await client.getattr(ino, ctx)
        if size < old["size"] and size % cs:
            index = size // cs
            client.drop_location(ino, index)
            if await client.locate(ino, index) is not None:
                await self._truncate_chunk(ino, index, size % cs)
        if ctx is not None:
            changes["ctx"] = ctx
        attr: Attr = await client.call("setattr", {"ino": ino, "size": size, **changes})
        st.gen += 1        # anything fetched while the truncate was under way is old
        st.size = size
        st.pending_end = 0
        st.locs.clear()
        st.leases = {i: v for i, v in st.leases.items() if i * cs < size}
        # chunks wholly past the new size are gone: nothing left to fsync there
        st.unsynced = {h: v for h, v in st.unsynced.items() if v[0] * cs < size}
        return attr

    async def _truncate_chunk(self, ino: int, index: int, length: int) -> None:
        last: GFSError | None = None
        for attempt in range(max(1, self.cfg.retries)):
            lease = await self.lease(ino, index)
            try:
                await rpc.call(self.client.http, lease.primary.addr, "truncate", {
                    "handle": lease.handle, "version": lease.version, "length": length,
                    "secondaries": [s.addr for s in lease.secondaries]},
                    timeout=self.client.chunkd_timeout, token=lease.token)
                return
            except GFSError as exc:
                if exc.code not in RETRYABLE:
                    raise
                last = exc
                self.drop_lease(ino, index)
                await retry.MUTATION.pause(attempt, log, "truncate of inode %d chunk %d (try %d) "
                                           "failed: %s", ino, index, attempt + 1, exc)
        raise GFSError(Code.EIO, f"inode {ino} chunk {index}: truncate failed ({last})")
