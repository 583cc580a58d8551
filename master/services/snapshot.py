"""Snapshots (GFS §3.4): copy-on-write copies of a file or a whole tree.

``snapshot {src, parent, name}``

:class:`SnapshotService` (``Master.snapshots``) takes it in three steps:

1. *Freeze*: new ``lease`` calls on the files of ``src`` wait
   (:meth:`SnapshotService.gate`), and the snapshot waits for those already
   under way (their per-chunk locks, ``Master.chunk_lock``).
2. *Revoke* every lease a client may still hold on those chunks
   (:meth:`master.chunks.leases.LeaseManager.revoke_many`: the version goes up, so an
   old primary's later commits answer STALE and the client asks for a new lease).
3. *Copy the metadata* at once: one logged record (``op: snapshot``, the new
   inode numbers in it) applied through ``Namespace.apply``, raising every
   shared chunk's reference count. It is applied right after a synchronous
   re-check that nothing in the tree holds or is being granted a lease.

Copy-on-write (:meth:`SnapshotService.copy_on_write`, called by ``Master.lease``
under the chunk's lock): the first write to a chunk whose reference count is above 1
reserves a new handle (logged), tells every chunkd holding a replica to copy
the chunk *locally* (``copy`` RPC: no data through the client or the master),
then logs ``cow`` (the file's chunk map points at the new handle, the old one
loses a reference) and grants the lease on the copy. Record append and
truncate get their leases through ``lease`` too, so they copy as well.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from gfsfs.common.errors import Code, GFSError

from master.state import records
from master.state.namespace import check_name
from master.state.perms import R, W, X, Ctx, require

if TYPE_CHECKING:
    from master.chunks.registry import Chunkd
    from master.core import Master

log = logging.getLogger(__name__)


class SnapshotService:
    """Snapshots of one master: the frozen files, one snapshot at a time."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.frozen: dict[int, trio.Event] = {}   # ino -> set when its snapshot is done
        self.lock = trio.Lock()
        self.done = 0
        self.cows = 0

    async def gate(self, ino: int) -> None:
        """Wait while a snapshot of a tree holding ``ino`` is being taken."""
        while (event := self.frozen.get(ino)) is not None:
            await event.wait()

    # ------------------------------------------------------------ copy-on-write

    async def copy_on_write(self, ino: int, index: int, old: int) -> int:
        """Give chunk ``index`` of ``ino`` its own copy of shared chunk ``old``
        (its replicas copy it locally); the new handle, leased. Called with the
        chunk's lock held (``Master.lease``)."""
        master = self.master
        ns, reg = master.ns, master.registry
        srvs = reg.replicas(old)
        if not srvs:
            raise GFSError(Code.UNAVAILABLE, f"no live replica of shared chunk {old} to copy")
        version = ns.chunks[old][0]
        # the handle is reserved on disk before any chunkd makes it: a crash
        # before the cow record leaves only orphan copies, deleted when their
        # chunkds report them, and the number is never handed out again
        new = await master.new_handle()
        ok = await self._copy(srvs, old, new, version)
        if not ok:
            raise GFSError(Code.UNAVAILABLE, f"no replica of chunk {old} could copy it")
        try:
            await master.mutate(records.cow(ino, index, old, new, version))
        except GFSError:
            for srv in ok:
                reg.pending_delete.setdefault(srv.id, set()).add(new)
            raise
        self.cows += 1
        master.leases.settle(new, ok)           # locations; the first live one is primary
        log.info("chunk %d of inode %d: copy-on-write of %d to %d on %s", index, ino, old, new,
                 ",".join(s.id for s in ok))
        return new

    async def _copy(self, srvs: list[Chunkd], old: int, new: int, version: int
                    ) -> list[Chunkd]:
        """``copy`` RPC on each of ``srvs``; those that made the copy."""
        done: set[str] = set()

        async def one(srv: Chunkd) -> None:
            try:
                await self.master.caller(srv.addr, "copy", {
                    "handle": old, "version": version, "new_handle": new,
                    "new_version": version})
                done.add(srv.id)
            except Exception as exc:
                log.warning("copy of chunk %d to %d on chunkd %s failed: %s", old, new,
                            srv.id, exc)

        async with trio.open_nursery() as nursery:
            for srv in srvs:
                nursery.start_soon(one, srv)
        return [s for s in srvs if s.id in done]

    # ------------------------------------------------------------ snapshot

    def _files(self, src: int) -> set[int]:
        return {i.ino for i in self.master.ns.subtree(src) if i.chunks is not None}

    def _check(self, src: int, parent: int, name: bytes, ctx: Ctx | None) -> None:
        """Raise if ``src`` cannot be snapshot to ``name`` in ``parent`` now."""
        ns = self.master.ns
        src_inode = ns.get(src)
        pdir = ns.get_dir(parent)
        assert pdir.dir is not None
        check_name(name)
        if name in pdir.dir.entries:
            raise GFSError(Code.EEXIST, f"{name!r} exists")
        if src_inode.dir is not None and ns.is_ancestor(src_inode.ino, pdir.ino):
            raise GFSError(Code.EINVAL, "cannot snapshot a directory into itself")
        if ctx is not None and not ctx.root:
            require(pdir, ctx, W | X)
            for inode in ns.subtree(src):
                require(inode, ctx, R | (X if inode.dir is not None else 0))

    async def take(self, src: int, parent: int, name: bytes,
                   ctx: Ctx | None = None) -> dict[str, Any]:
        """Copy ``src`` to ``name`` in directory ``parent`` (see the module doc)."""
        t0 = time.monotonic()
        async with self.lock:
            event = trio.Event()
            frozen: set[int] = set()
            try:
                out = await self._freeze_and_copy(src, parent, name, ctx, event, frozen)
            finally:
                for ino in frozen:
                    if self.frozen.get(ino) is event:
                        del self.frozen[ino]
                event.set()
        self.done += 1
        seconds = time.monotonic() - t0
        log.info("snapshot of inode %d as %r in %d: %d inodes, %d chunk references, "
                 "%d leases revoked, %.3f s", src, name, parent, out["inodes"], out["chunks"],
                 out["leases_revoked"], seconds)
        return {**out, "seconds": seconds}

    async def _freeze_and_copy(self, src: int, parent: int, name: bytes, ctx: Ctx | None,
                               event: trio.Event, frozen: set[int]) -> dict[str, Any]:
        """Steps 1 to 3 of the module doc, until the record is logged; the
        files frozen (until ``event``) are added to ``frozen``."""
        master = self.master
        ns, leases = master.ns, master.leases
        fenced: set[int] = set()            # handles this snapshot revoked
        revoked = 0
        while True:
            # (re)checked synchronously; the last pass applies the record
            self._check(src, parent, name, ctx)
            files = self._files(src)
            for ino in files - frozen:
                self.frozen.setdefault(ino, event)
            frozen |= files
            if any(key[0] in files for key in master.chunk_locks):
                await trio.sleep(0.005)         # a lease or allocation under way
                continue
            now_ns = time.time_ns()
            todo = sorted({h for ino in files for h in (ns.inodes[ino].chunks or {}).values()
                           if h in leases.table
                           or (h not in fenced and leases.maybe_leased(h, now_ns))})
            if todo:
                fenced.update(todo)
                revoked += await leases.revoke_many(todo, "a snapshot")
                continue
            order = ns.snapshot_order(src)
            rec = records.snapshot(src, parent, name, ns.next_ino, len(order))
            chunk_refs = sum(len(i.chunks or ()) for i in order)
            await master.mutate(rec)
            return {"ino": rec["ino"], "inodes": len(order), "files": len(files),
                    "chunks": chunk_refs, "leases_revoked": revoked}
