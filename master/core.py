"""The master: namespace + op log + chunk registry, and the flows that span them.

:meth:`Master.mutate` is the one way state changes: permission check, apply in
memory, append to the op log -- all synchronous, with no await between the
check and the mutation -- and then wait for the group-committed fsync. Replies
to clients are sent only after that wait.

Leases (GFS §3.1) are :class:`master.chunks.leases.LeaseManager`'s (``Master.leases``),
snapshots and copy-on-write :class:`master.services.snapshot.SnapshotService`'s
(``Master.snapshots``); this class holds the per-chunk locks both run under.
Read-only reports over its state (``cluster_status``, ``fileinfo``, fsck, the
trash listing, ``GET /status``) are :mod:`master.services.queries`'.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import trio

from gfsfs.common.auth.security import OPEN, Security
from master.exports.rules import ExportTable
from gfsfs.common.auth.tokens import READ, WRITE
from gfsfs.common.config import MasterConfig, WebConfig
from gfsfs.common.errors import Code, GFSError

from master.state import image, records, rollback
from master.services import quotas, snapshot
from master.chunks.registry import ChunkRegistry
from master.chunks.leases import ChunkdCaller, LeaseManager, LeaseTable
from master.state.logread import Loaded, LogDamage, keep_damaged
from master.state.namespace import MAX_FILE_SIZE, Namespace, Record
from master.state.oplog import OpLog
from master.state.perms import Ctx, authorize
from master.ha.role import Role
from master.ha.shipping import Shipper

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FirstWrite:
    """Bytes (at most INLINE_MAX) a client is about to write to a chunk that
    may not exist yet. When the lease has to allocate the chunk, the chunkds
    create it with these bytes already in place -- one round trip where a
    lease and then a commit took two -- and the file is extended to ``size``
    (when given) once they hold them. For an existing chunk it is ignored."""
    offset: int
    data: bytes
    sync: bool = False
    size: int | None = None
    mtime_ns: int = 0


class Master:
    def __init__(self, cfg: MasterConfig, ns: Namespace, oplog: OpLog,
                 caller: ChunkdCaller, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.ns = ns
        self.oplog = oplog
        self.role = Role(cfg, ns)
        # the cluster secret's objects (master.main sets it; OPEN: no secret)
        self.security: Security = OPEN
        # the web page's logins ([web]; master.main sets it; master.api.weblogin)
        self.web_cfg: WebConfig = WebConfig()
        # the export rules ([master] exports_file; master.main sets them; None:
        # no exports, only holders of the secret get in) and their sessions
        # (master.api.exports.Exports, set by build_app)
        self.exports: ExportTable | None = None
        self.shares: Any = None
        self.shipper = Shipper(cfg, oplog, self.role)
        oplog.remote = self.shipper.wait
        # a shadow's lag behind its primary (master.ha.service.HA sets it)
        self.follower_lag: Callable[[], dict[str, Any]] | None = None
        self.caller = caller = self.fenced(caller)
        # the lease table is shared: the registry drops the leases of the
        # replicas and chunkds it forgets, the lease manager does the rest
        self.registry = ChunkRegistry(cfg.chunk_size, cfg.heartbeat_interval,
                                      cfg.dead_after_heartbeats,
                                      LeaseTable(int(cfg.lease_seconds * 1e9)), clock)
        self.registry.following = not self.role.primary
        self.leases = LeaseManager(cfg, ns, self.registry, caller, self.mutate)
        self.snapshots = snapshot.SnapshotService(self)
        # (ino, chunk index) -> [Lock, users]: held by a lease grant, an
        # allocation, a copy-on-write, a re-replication copy (chunk_lock)
        self.chunk_locks: dict[tuple[int, int], list[Any]] = {}
        # under-goal chunks a client asked for (handle -> monotonic time): the
        # replicator copies these before the rest of their class (GFS §4.3)
        self.wanted: dict[int, float] = {}
        # op log failures (master.state.rollback): chunk versions to log again, and
        # whether the namespace still holds undone records (rebuild failed)
        self.readopt: dict[int, int] = {}
        self.undo_pending = False
        # the next chunk handle to hand out; every handle below ns.next_handle
        # is reserved by a durable record (new_handle), so none handed out
        # before a crash -- to chunkds, maybe, with its record lost -- is reused
        self.handle_next = ns.next_handle
        oplog.on_failure = self._undo

    def fenced(self, caller: ChunkdCaller) -> ChunkdCaller:
        """``caller`` with this master's epoch in every order (chunkds refuse
        orders from an epoch older than the newest they have seen)."""
        async def call(addr: str, name: str, body: dict[str, Any]) -> Any:
            return await caller(addr, name, {**body, "epoch": self.ns.epoch})
        return call

    @classmethod
    def open(cls, cfg: MasterConfig, caller: ChunkdCaller, data_dir: str | Path | None = None,
             clock: Callable[[], float] = time.monotonic, recover_log: bool = False) -> Master:
        """Recover from ``data_dir`` (checkpoint + op log replay). Raises
        :class:`LogDamage` if the log cannot be replayed as it is; with
        ``recover_log`` the damaged file is kept aside and cut there instead."""
        oplog = OpLog(data_dir if data_dir is not None else cfg.data_dir)
        for _attempt in range(100):
            try:
                ns, loaded = cls._replay(cfg, oplog)
                break
            except LogDamage as damage:
                if not recover_log:
                    raise
                kept = keep_damaged(damage)
                log.critical("%s; kept %s, cut the log at offset %d and dropped every record "
                             "from there", damage, ", ".join(map(str, kept)), damage.offset)
        else:
            raise RuntimeError("op log recovery did not converge")
        oplog.start(loaded)
        if (loaded.state is None and not loaded.entries and oplog.last_seq == 0
                and cfg.role == "primary"):     # a new shadow takes its primary's records
            rec = records.init()
            ns.apply(rec)
            oplog.append(rec)
            oplog.flush_sync()
        return cls(cfg, ns, oplog, caller, clock)

    @staticmethod
    def _replay(cfg: MasterConfig, oplog: OpLog) -> tuple[Namespace, Loaded]:
        loaded = oplog.load()
        if loaded.state is not None:
            ns = image.from_state(loaded.state, cfg.replication_factor)
            if ns.chunk_size != cfg.chunk_size:
                log.warning("chunk_size %d in config, %d in the checkpoint: keeping %d",
                            cfg.chunk_size, ns.chunk_size, ns.chunk_size)
        else:
            ns = Namespace(cfg.chunk_size, cfg.replication_factor)
        for entry in loaded.entries:
            try:
                ns.apply(entry.rec)
            except GFSError as exc:
                raise LogDamage(entry.path, entry.offset,
                                f"record {entry.seq} ({entry.rec.get('op')!r}) does not "
                                f"replay: {exc}") from None
        ns.take_garbage()        # chunkds' reports will show what to delete
        return ns, loaded

    def close(self) -> None:
        self.oplog.close()

    # ------------------------------------------------------------ mutations

    async def mutate(self, rec: Record, ctx: Ctx | None = None) -> int | None:
        """Check, apply, log; return once the record is durable. A record
        whose request id was applied before is not applied again: what the
        first attempt returned is answered (once that is durable)."""
        done, result = self.replayed(rec)
        if done:
            await self.oplog.commit(self.oplog.last_seq)
            return result
        result, seq = self.stage(rec, ctx)
        await self.oplog.commit(seq)
        return result

    def replayed(self, rec: Record) -> tuple[bool, int | None]:
        """(whether ``rec``'s request id was applied, what that returned)."""
        rid = rec.get("rid")
        if rid is None or rid not in self.ns.rids:
            return False, None
        self.role.check_primary()
        return True, self.ns.rids[rid]

    def stage(self, rec: Record, ctx: Ctx | None = None) -> tuple[int | None, int]:
        """Check, apply and append to the op log, with no await in between;
        returns (result, log sequence number). Nothing may be answered to a
        client about it before ``oplog.commit(seq)`` returns. While the op log
        is unusable this raises ENOSPC/EIO before touching anything; chunks
        the record frees are deleted only once it is durable."""
        self.role.check_primary()
        if rec["op"] != "epoch":
            self.shipper.check_alone()
        self.oplog.check_writable()
        rec = authorize(self.ns, rec, ctx)
        result = self.ns.apply(rec)
        seq = self.oplog.append(rec)
        if self.ns.garbage:
            garbage = self.ns.take_garbage()
            self.oplog.when_durable(seq, lambda: self.registry.collect_garbage(garbage))
        return result, seq

    async def _undo(self) -> None:
        """The op log lost records: back to the durable state (master.state.rollback)."""
        try:
            await rollback.undo(self)
            self.undo_pending = False
        except Exception:
            self.undo_pending = True
            log.critical("op log failure: cannot rebuild the durable namespace; it may show "
                         "undone records until the log is writable again", exc_info=True)

    async def reopen_log(self) -> bool:
        """After an op log failure: try to write again (a checkpoint of the
        durable state, a new log); whether mutations are accepted again."""
        if self.oplog.failed is None:
            return True
        if self.undo_pending:
            await self._undo()
            if self.undo_pending:
                return False
        if not await self.oplog.reopen(lambda: image.to_state(self.ns)):
            return False
        await rollback.readopt(self)
        return True

    async def rename(self, rec: Record, ctx: Ctx | None = None) -> None:
        """A rename (GFS §3.1: the master revokes the leases of a file being
        renamed): the leases of the renamed file's chunks -- of every file
        under a renamed directory -- are revoked (version raised, one batched
        ``set_versions`` per chunkd, :meth:`LeaseManager.revoke_many`) with those
        chunks' locks held, and the rename is applied before the locks are
        released, so no lease is granted in between. Only chunks with a lease
        in the table are touched; a directory costs one walk of its tree. A
        revocation that fails (no replica reachable) does not fail the rename."""
        src = self.ns.child(rec["parent"], rec["name"])
        keys: list[tuple[int, int, int]] = []
        if self.replayed(rec)[0]:
            src = None                      # a retry: mutate answers it
        if src is not None:
            authorize(self.ns, dict(rec), ctx)      # no revocations for a refused rename
            held = self.leases.table
            if held:
                inodes = [src] if src.dir is None else self.ns.subtree(src.ino)
                keys = sorted((i.ino, index, h) for i in inodes
                              for index, h in (i.chunks or {}).items() if h in held)
        if not keys:
            await self.mutate(rec, ctx)
            return
        async with AsyncExitStack() as stack:
            for ino, index, _h in keys:         # sorted: no lock-order deadlock
                await stack.enter_async_context(self.chunk_lock((ino, index)))
            todo = [h for _i, _x, h in keys if h in self.leases.table and h in self.ns.chunks]
            if todo:
                try:
                    await self.leases.revoke_many(todo, "a rename")
                except GFSError as exc:
                    log.warning("rename: %s", exc)
            await self.mutate(rec, ctx)

    async def mutate_attr(self, rec: Record, ctx: Ctx | None) -> dict[str, Any]:
        ino = await self.mutate(rec, ctx)
        assert ino is not None
        return {**self.ns.attr(self.ns.get(ino)), **self.parent_attr(rec)}

    def parent_attr(self, rec: Record) -> dict[str, Any]:
        """``{"parent_attr": ...}`` for a record that changed a directory: the
        client answers the kernel's next getattr of it without asking us."""
        parent = rec.get("parent")
        try:
            return {} if parent is None else {"parent_attr": self.ns.attr(self.ns.get(parent))}
        except GFSError:            # gone meanwhile
            return {}

    async def checkpoint(self) -> int:
        return await self.oplog.checkpoint(lambda: image.to_state(self.ns))

    # ------------------------------------------------------------ data path

    def chunks(self, ino: int, first: int, count: int) -> dict[str, Any]:
        inode = self.ns.get_file(ino)
        assert inode.chunks is not None
        if count <= len(inode.chunks):
            found = [(i, inode.chunks[i]) for i in range(first, first + count)
                     if i in inode.chunks]
        else:
            found = sorted((i, h) for i, h in inode.chunks.items() if first <= i < first + count)
        out = []
        for index, handle in found:
            replicas = self.registry.replicas(handle)
            if len(replicas) < inode.goal:
                self.note_wanted(handle)
            version = self.ns.chunks[handle][0]
            out.append({"index": index, "handle": handle, "version": version,
                        "replicas": [s.replica() for s in replicas],
                        **self.chunk_token(handle, version, READ)})
        return {"size": inode.size, "chunk_size": self.ns.chunk_size, "chunks": out}

    def chunk_token(self, handle: int, version: int, access: str) -> dict[str, str]:
        """``{"token": ...}``: the chunk token a client shows the chunkds
        (:mod:`gfsfs.common.auth.tokens`); nothing in an open cluster."""
        keys = self.security.tokens()
        return {} if keys is None else {"token": keys.issue(handle, version, access)}

    WANTED_FOR = 60.0      # seconds a client's interest keeps a chunk's boost

    def note_wanted(self, handle: int) -> None:
        now = time.monotonic()
        if len(self.wanted) > 100_000:
            self.wanted = {h: t for h, t in self.wanted.items() if now - t < self.WANTED_FOR}
        self.wanted[handle] = now

    def is_wanted(self, handle: int) -> bool:
        """Whether a client asked for this chunk lately."""
        t = self.wanted.get(handle)
        return t is not None and time.monotonic() - t < self.WANTED_FOR

    async def lease(self, ino: int, index: int, avoid: frozenset[str] | set[str] = frozenset(),
                    first: FirstWrite | None = None) -> dict[str, Any]:
        """``avoid``: chunkd ids the client cannot reach; a lease whose primary
        is one of them is granted anew to another replica (the version bump
        fences the old primary), if there is one. ``first``: see
        :class:`FirstWrite`; the reply then says ``written`` (and carries the
        file's ``attr`` when it was extended)."""
        written, reply = await self._lease(ino, index, avoid, first)
        if not written or first is None:
            return reply
        reply["written"] = True
        if first.size is not None:
            reply["attr"] = await self.mutate_attr(
                records.extend(ino, first.size, first.mtime_ns), None)
        return reply

    async def _lease(self, ino: int, index: int, avoid: frozenset[str] | set[str],
                     first: FirstWrite | None) -> tuple[bool, dict[str, Any]]:
        if index < 0:
            raise GFSError(Code.EINVAL, "negative chunk index")
        if index * self.ns.chunk_size >= MAX_FILE_SIZE:
            raise GFSError(Code.EFBIG, f"chunk {index} is beyond the largest file size")
        await self.snapshots.gate(ino)          # a snapshot of its tree is being taken
        async with self.chunk_lock((ino, index)):
            handle = self.ns.chunk_at(ino, index)
            if handle is not None and self.ns.chunks[handle][1] > 1:
                # shared with a snapshot: this file gets its own copy first
                handle = await self.snapshots.copy_on_write(ino, index, handle)
            written = False
            if handle is None:
                # a new chunk beyond the end: refused before any byte is sent if
                # the growth cannot fit a quota the file is under (docs/quotas.md)
                cs = self.ns.chunk_size
                end = index * cs + (1 if first is None else first.offset + len(first.data))
                if first is not None and first.size is not None:
                    end = max(end, first.size)
                self.ns.check_growth(ino, end, time.time_ns())
                handle = await self._allocate(ino, index, first)
                written = first is not None
            else:
                await self.leases.acquire(handle, avoid)
            reply = self.leases.reply(handle)
            return written, {**reply, **self.chunk_token(handle, reply["version"], WRITE)}

    async def append_lease(self, ino: int, min_index: int = 0) -> dict[str, Any]:
        """The lease of the chunk a record append goes to (GFS §3.3): the last
        chunk of the file -- the highest index in its chunk map, or the chunk
        the file size ends in if that is later, or ``min_index`` (the client
        found the chunk before it full) if that is later still -- allocated if
        it does not exist. ``min_offset`` is where the file size ends inside
        that chunk (0 when it ends before it): the primary appends no lower."""
        if min_index < 0:
            raise GFSError(Code.EINVAL, "negative chunk index")
        inode = self.ns.get_file(ino)
        assert inode.chunks is not None
        cs = self.ns.chunk_size
        last = max(inode.chunks) if inode.chunks else 0
        index = max(last, inode.size // cs, min_index)
        reply = await self.lease(ino, index)
        size = self.ns.get_file(ino).size          # may have grown meanwhile
        return {**reply, "index": index, "chunk_size": cs,
                "min_offset": min(cs, max(0, size - index * cs))}

    HANDLE_BATCH = 1024     # chunk handles reserved per op-log record

    async def new_handle(self) -> int:
        """A chunk handle never handed out before, reserved on disk first:
        a chunkd may make the chunk before its own record is durable, and a
        crash then must not let the next master give the number to another
        chunk (the orphan's deletion racing with it, or a late chunkd's
        orphan taken for a replica). One ``reserve_handles`` record per
        :data:`HANDLE_BATCH` handles."""
        while self.handle_next >= self.ns.next_handle:
            await self.mutate(records.reserve_handles(self.handle_next + self.HANDLE_BATCH))
        handle = self.handle_next
        self.handle_next += 1
        return handle

    def skip_reserved_handles(self) -> None:
        """Hand out nothing below ns.next_handle (after a promotion: the old
        primary may have handed out any handle it had reserved)."""
        self.handle_next = self.ns.next_handle

    async def _allocate(self, ino: int, index: int, first: FirstWrite | None = None) -> int:
        goal = self.ns.get_file(ino).goal
        targets = self.registry.place(goal)
        handle = await self.new_handle()
        _, seq = self.stage(records.add_chunk(ino, index, handle, 1))
        extra = {} if first is None else {"offset": first.offset, "data": first.data,
                                          "sync": first.sync}
        errors: list[GFSError] = []
        # the chunkds create the chunk while the record is fsync'd: a chunk made
        # on a chunkd but lost with an unsynced log tail is an orphan, deleted
        # when that chunkd reports it. A first write that also sets the size
        # (a small file's bytes at close) has its extend record logged next:
        # that one group commit makes both durable, before any reply
        async with trio.open_nursery() as nursery:
            if first is None or first.size is None:
                nursery.start_soon(self.oplog.commit, seq)
            ok = await self.leases.set_version(handle, 1, targets, create=True, extra=extra,
                                               errors=errors)
        if not ok:
            await self.mutate(records.drop_chunk(ino, index, handle))
            if errors and all(e.code == "ENOSPC" for e in errors):
                raise GFSError(Code.ENOSPC, f"no chunk server has room for chunk {handle}")
            raise GFSError(Code.UNAVAILABLE, f"no chunk server could create chunk {handle}")
        self.leases.settle(handle, ok)
        return handle

    @asynccontextmanager
    async def chunk_lock(self, key: tuple[int, int]) -> AsyncIterator[None]:
        entry = self.chunk_locks.setdefault(key, [trio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self.chunk_locks[key]

    # ------------------------------------------------------------ chunkds

    async def register(self, cid: str, addr: str, rack: str, capacity: int, used: int,
                       free: int, chunks: list[tuple[int, int]]) -> dict[str, Any]:
        delete, newer = self.registry.register(cid, addr, rack, capacity, used, free, chunks,
                                               self.ns.chunks)
        if not self.role.rules():           # a shadow only learns where replicas are
            return {"heartbeat_interval": self.cfg.heartbeat_interval, "delete": [],
                    **self.role.reply()}
        await self._adopt(cid, newer)
        return {"heartbeat_interval": self.cfg.heartbeat_interval, "delete": delete,
                **self.role.reply()}

    async def report_chunks(self, cid: str, added: list[tuple[int, int]], removed: list[int],
                            corrupt: list[int]) -> dict[str, Any]:
        srv = self.registry.servers.get(cid)
        if srv is None or not srv.alive:
            return {"delete": [], **self.role.reply()}  # its next heartbeat asks it to register
        for handle in removed:
            self.registry.drop_location(handle, cid)
        for handle in corrupt:
            log.warning("chunkd %s reports chunk %d corrupt", cid, handle)
            self.registry.drop_location(handle, cid)
            self.registry.note_corrupt(handle, cid)
        delete, newer = self.registry.add_replicas(srv, added, self.ns.chunks)
        if not self.role.rules():
            return {"delete": [], **self.role.reply()}
        await self._adopt(cid, newer)
        return {"delete": delete + list(corrupt), **self.role.reply()}

    async def _adopt(self, cid: str, newer: list[tuple[int, int]]) -> None:
        """A replica newer than the master knows (GFS §4.5): take its version
        if a grant of ours can explain it (:meth:`LeaseManager.may_adopt`)."""
        for handle, version in newer:
            if not self.leases.may_adopt(cid, handle, version):
                continue
            log.warning("chunkd %s has chunk %d at v%d, newer than ours: adopting", cid,
                        handle, version)
            try:
                await self.mutate(records.set_version(handle, version))
            except GFSError as exc:
                log.warning("adopting chunk %d failed: %s", handle, exc)
                continue
            if self.registry.servers[cid].alive:
                self.registry.set_locations(handle, [cid])

    # ------------------------------------------------------------ admin

    async def setgoal(self, ino: int, goal: int, recursive: bool,
                      ctx: Ctx | None = None) -> dict[str, Any]:
        """Set the replication goal (a logged mutation); how many inodes changed."""
        inode = self.ns.get(ino)
        targets = self.ns.subtree(ino) if recursive else [inode]
        changed = sum(1 for t in targets if t.goal != goal)
        # no await between counting and applying (mutate applies synchronously)
        await self.mutate(records.setgoal(ino, goal, recursive), ctx)
        return {"ino": ino, "goal": goal, "inodes": len(targets), "changed": changed}

    # ------------------------------------------------------------ statfs

    def statfs(self, ino: int = 1) -> dict[str, Any]:
        """Space and counts; ``quota``: the nearest quota at or above ``ino``."""
        primary = self.role.rules()
        out = {**self.registry.totals(), "files": len(self.ns.inodes),
               "chunk_size": self.ns.chunk_size, "primary": primary,
               "primary_url": self.role.url if primary else self.role.primary_url}
        q = self.ns.nearest_quota(ino)
        if q is not None:
            out["quota"] = quotas.row(self.ns, q)
        return out


class CheckpointLoop:
    """Background loop: a checkpoint every ``checkpoint_every`` records; while
    the op log is unusable, a retry to write it every ``period`` seconds."""

    def __init__(self, master: Master, period: float = 5.0, retry_period: float = 2.0) -> None:
        self.master = master
        self.period = period
        self.retry_period = retry_period

    async def run_once(self) -> bool:
        if self.master.oplog.failed is not None:
            return await self.master.reopen_log()
        if self.master.oplog.since_checkpoint < max(1, self.master.cfg.checkpoint_every):
            return False
        await self.master.checkpoint()
        return True

    async def run_forever(self) -> None:
        while True:
            failed = self.master.oplog.failed is not None
            await trio.sleep(min(self.period, self.retry_period) if failed else self.period)
            try:
                await self.run_once()
            except (OSError, GFSError) as exc:
                log.error("checkpoint failed: %s", exc)
            except Exception:
                # a bug must not end checkpoints (or the op log's recovery) for good
                log.exception("checkpoint loop: unexpected error; retrying in %.0fs",
                              self.period)
