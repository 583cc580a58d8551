"""Read-only queries over the master's state that the web page, the CLI's
RPCs (``cluster_status``, ``fsck``, ``fileinfo``, ``trash_list``, ``drain``,
``GET /status``) and ``/metrics`` share: each written once, here.

- paths: :func:`paths_of`;
- the trash: :class:`TrashEntry` (:func:`trash_items`, :func:`trash_dirs`,
  :func:`trash_entries`), :func:`trash_bytes`, and the ``trash_list`` reply;
- replication state: :func:`scan` (every referenced chunk's goal and live
  replicas), :func:`fsck`, :func:`chunk_goals`, :func:`replication_counts`,
  per-file summaries (:func:`file_replication`, :func:`fileinfo`);
- chunkd state: :func:`chunkds_by_id`, :func:`chunkd_counts`,
  :func:`chunkd_status`, :func:`heartbeat_age`, :func:`pending_deletes`,
  :func:`drain_status`;
- the reports built from them: :func:`inode_counts`, :func:`cluster_status`,
  :func:`status`.

Nothing here speaks HTTP or changes the namespace (:func:`fsck` forgets old
stale/corrupt sightings, which are soft state). Every function is synchronous:
no await between reading the state and answering.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import trio

from gfsfs.common.protocol import PROTOCOL_VERSION

from master.chunks.registry import Chunkd, ChunkNeed, ChunkRegistry
from master.state.image import gc_paused
from master.state.namespace import ROOT_INO, Inode, Namespace

if TYPE_CHECKING:
    from master.core import Master

EVENT_TTL = 3600.0            # seconds fsck remembers a stale or corrupt replica

TrashItem = tuple[int, list[Any]]       # (ino, [deleted_ns, parent, name]) of Namespace.trash


def text(name: bytes) -> str:
    """A name as text (bytes that are not UTF-8 as backslash escapes)."""
    return name.decode("utf-8", "backslashreplace")


def paths_of(ns: Namespace, inos: set[int]) -> dict[int, str]:
    """A path for each of ``inos`` that has a name (one walk from the root)."""
    out: dict[int, str] = {}
    if not inos:
        return out
    stack: list[tuple[int, str]] = [(ROOT_INO, "")]
    while stack and len(out) < len(inos):
        ino, path = stack.pop()
        inode = ns.inodes.get(ino)
        if inode is None or inode.dir is None:
            continue
        for name, (child, _cookie) in inode.dir.entries.items():
            cpath = f"{path}/{text(name)}"
            if child in inos and child not in out:
                out[child] = cpath
            if ns.inodes.get(child) is not None and ns.inodes[child].dir is not None:
                stack.append((child, cpath))
    return out


# ---------------------------------------------------------------- trash

@dataclass(frozen=True)
class TrashEntry:
    """One trashed file. ``dir_path``: its old directory's current path ("" for
    the root), None when that directory is gone."""
    ino: int
    parent: int
    name: bytes | None
    dir_path: str | None
    size: int
    chunks: int
    deleted_ns: int

    @property
    def path(self) -> str | None:
        """The path it had; None when its directory is gone or it has no name."""
        if self.dir_path is None or not self.name:
            return None
        return f"{self.dir_path}/{text(self.name)}"


def trash_items(ns: Namespace, newest_first: bool = False,
                limit: int | None = None) -> list[TrashItem]:
    """The trash, oldest deletion first (newest first with ``newest_first``;
    equal times keep the trash's order), at most ``limit`` of it."""
    if newest_first:
        items = sorted(ns.trash.items(), key=lambda kv: -kv[1][0])
    else:
        items = sorted(ns.trash.items(), key=lambda kv: kv[1][0])
    return items if limit is None else items[:limit]


def trash_dirs(ns: Namespace, items: list[TrashItem]) -> dict[int, str]:
    """The current path of each old directory of ``items`` that still has one."""
    dirs = paths_of(ns, {parent for _ino, (_when, parent, _name) in items})
    dirs[ROOT_INO] = ""
    return dirs


def trash_entries(ns: Namespace, items: list[TrashItem],
                  dirs: dict[int, str]) -> list[TrashEntry]:
    """``items`` with their sizes, chunk counts and old directories' paths."""
    out = []
    for ino, (deleted_ns, parent, name) in items:
        inode = ns.inodes.get(ino)
        out.append(TrashEntry(ino, parent, name, dirs.get(parent),
                              inode.size if inode is not None else 0,
                              len(inode.chunks or ()) if inode is not None else 0,
                              deleted_ns))
    return out


def trash_bytes(ns: Namespace) -> int:
    """The size of every file in the trash."""
    return sum(ns.inodes[ino].size for ino in ns.trash if ino in ns.inodes)


def purge_ns(entry: TrashEntry, trash_time: float) -> int:
    """When the purger takes ``entry`` (ns since the epoch)."""
    return entry.deleted_ns + int(trash_time * 1e9)


def trash_list(master: Master) -> dict[str, Any]:
    """The ``trash_list`` reply: every trashed file, oldest deletion first, with
    the path it had (:attr:`TrashEntry.path`), size, deletion time and when the
    purger will take it."""
    ns, ttl = master.ns, master.cfg.trash_time
    items = trash_items(ns)
    entries = [{"ino": e.ino, "parent": e.parent, "name": e.name, "path": e.path,
                "size": e.size, "chunks": e.chunks, "deleted_ns": e.deleted_ns,
                "purge_ns": purge_ns(e, ttl)}
               for e in trash_entries(ns, items, trash_dirs(ns, items))]
    return {"trash_time": ttl, "entries": entries}


# ---------------------------------------------------------------- replication state

SCAN_STEP = 20_000          # inodes between two yields of a cooperative scan

def scan(master: Master) -> dict[int, ChunkNeed]:
    """handle -> ChunkNeed for every chunk a file (or a trashed file) references."""
    with gc_paused():        # a ChunkNeed per chunk: no collection walking them all
        return _scan(master)


def _scan(master: Master) -> dict[int, ChunkNeed]:
    out: dict[int, ChunkNeed] = {}
    _add_needs(master.ns, master.ns.inodes.values(), out)
    for need in out.values():
        need.live = master.registry.replicas(need.handle)
    return out


def _add_needs(ns: Namespace, inodes: Iterable[Inode], out: dict[int, ChunkNeed]) -> None:
    for inode in inodes:
        if not inode.chunks:
            continue
        in_trash = inode.ino in ns.trash
        for index, handle in inode.chunks.items():
            need = out.get(handle)
            if need is None:
                need = out[handle] = ChunkNeed(handle, inode.goal, [], in_trash)
            else:
                need.goal = max(need.goal, inode.goal)
                need.trash_only = need.trash_only and in_trash
            need.refs.append((inode.ino, index))


async def scan_cooperatively(master: Master, step: int = SCAN_STEP) -> dict[int, ChunkNeed]:
    """:func:`scan` for the replicator's rounds, yielding to the request loop
    every ``step`` inodes (a full scan of a million chunks took ~2 s, all of it
    a stall for every request). The result may mix states a few milliseconds
    apart; a handle no file references any more is left out, and a copy is
    recorded only if the chunk's version is still the one it was made at."""
    ns, reg = master.ns, master.registry
    out: dict[int, ChunkNeed] = {}
    inodes = list(ns.inodes.values())
    with gc_paused():
        for start in range(0, len(inodes), step):
            _add_needs(ns, inodes[start:start + step], out)
            await trio.sleep(0)
        needs = list(out.values())
        for start in range(0, len(needs), step):
            for need in needs[start:start + step]:
                need.live = reg.replicas(need.handle)
            await trio.sleep(0)
    return {h: n for h, n in out.items() if h in ns.chunks}


def chunk_goals(ns: Namespace) -> dict[int, int]:
    """handle -> the largest goal among the files referencing it."""
    goals: dict[int, int] = {}
    for inode in ns.inodes.values():
        for handle in (inode.chunks or {}).values():
            if goals.get(handle, 0) < inode.goal:
                goals[handle] = inode.goal
    return goals


def replication_counts(ns: Namespace, reg: ChunkRegistry) -> tuple[int, int, int]:
    """(under goal, lost: no live replica, over goal) chunk counts; ``lost`` is
    a subset of ``under goal``."""
    under = lost = over = 0
    for handle, goal in chunk_goals(ns).items():
        live = len(reg.replicas(handle))
        if live == 0:
            lost += 1
        if live < goal:
            under += 1
        elif live > goal:
            over += 1
    return under, lost, over


def chunk_states(need: ChunkNeed, stale: bool, corrupt: bool) -> list[str]:
    """fsck's states of one chunk: lost / under_goal / over_goal, stale, corrupt."""
    live = len(need.live)
    states = []
    if live == 0:
        states.append("lost")
    elif live < need.goal:
        states.append("under_goal")
    elif live > need.goal:
        states.append("over_goal")
    if stale:
        states.append("stale")
    if corrupt:
        states.append("corrupt")
    return states


def fsck_problem(master: Master, need: ChunkNeed, states: list[str],
                 now: float) -> dict[str, Any]:
    """One unhealthy chunk as fsck reports it (its files without paths yet);
    ``now``: the registry's clock, for the ages of stale/corrupt sightings."""
    reg = master.registry
    stale = reg.stale_seen.get(need.handle, {})
    corrupt = reg.corrupt_seen.get(need.handle, {})
    return {
        "handle": need.handle, "version": master.ns.chunks[need.handle][0],
        "goal": need.goal, "live": len(need.live), "states": states,
        "trash_only": need.trash_only, "replicas": [s.id for s in need.live],
        "stale": [{"id": cid, "version": v, "age": round(now - t, 1)}
                  for cid, (v, t) in sorted(stale.items())],
        "corrupt": [{"id": cid, "age": round(now - t, 1)}
                    for cid, t in sorted(corrupt.items())],
        "files": [{"ino": ino, "index": index} for ino, index in need.refs]}


def fsck(master: Master) -> dict[str, Any]:
    """Every chunk that is lost (no live replica), under or over its goal, or
    had a stale or corrupt replica found recently, with the files it belongs to."""
    reg, ns = master.registry, master.ns
    needs = scan(master)
    reg.prune_events(set(ns.chunks), EVENT_TTL)
    now = reg.clock()
    problems: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for handle, need in sorted(needs.items()):
        states = chunk_states(need, bool(reg.stale_seen.get(handle)),
                              bool(reg.corrupt_seen.get(handle)))
        counts.update(states)
        if states:
            problems.append(fsck_problem(master, need, states, now))
    paths = paths_of(ns, {f["ino"] for p in problems for f in p["files"]})
    for p in problems:
        for f in p["files"]:
            f["path"] = paths.get(f["ino"])
            f["in_trash"] = f["ino"] in ns.trash
    alive, dead = chunkd_counts(reg)
    return {"chunks": len(needs), "healthy": len(needs) - len(problems),
            "lost": counts["lost"], "under_goal": counts["under_goal"],
            "over_goal": counts["over_goal"], "stale": counts["stale"],
            "corrupt": counts["corrupt"], "chunkds_alive": alive, "chunkds_dead": dead,
            "problems": problems}


def live_replicas(reg: ChunkRegistry, handle: int) -> int:
    """How many live chunkds hold the current version of ``handle``."""
    return sum(1 for cid in reg.locations.get(handle, ())
               if (s := reg.servers.get(cid)) is not None and s.alive)


def file_replication(reg: ChunkRegistry, inode: Inode) -> dict[str, Any]:
    """A file's chunks by state against its goal: how many, how many under the
    goal and lost (no live replica), and the file's state ("lost", "under",
    "healthy", or "empty" without chunks)."""
    under = lost = 0
    for handle in (inode.chunks or {}).values():
        live = live_replicas(reg, handle)
        if live == 0:
            lost += 1
        if live < inode.goal:
            under += 1
    n = len(inode.chunks or {})
    state = "lost" if lost else "under" if under else "healthy" if n else "empty"
    return {"chunks": n, "under": under, "lost": lost, "state": state}


def fileinfo(master: Master, ino: int) -> dict[str, Any]:
    """An inode's attributes and, for a regular file, every chunk with its
    version, live replicas and current lease (the ``fileinfo`` reply)."""
    ns, reg = master.ns, master.registry
    inode = ns.get(ino)
    now = time.time_ns()
    out = []
    for index, handle in sorted((inode.chunks or {}).items()):
        version, refs = ns.chunks[handle]
        lease = reg.valid_lease(handle, now)
        out.append({
            "index": index, "handle": handle, "version": version, "refcount": refs,
            "replicas": [{"id": s.id, "addr": s.addr, "rack": s.rack}
                         for s in reg.replicas(handle)],
            "primary": None if lease is None else reg.servers[lease.primary].replica(),
            "lease_expires_ns": None if lease is None else lease.expires_ns})
    return {"attr": ns.attr(inode), "chunk_size": ns.chunk_size,
            "in_trash": ino in ns.trash, "chunks": out}


# ---------------------------------------------------------------- chunkd state

def chunkds_by_id(reg: ChunkRegistry) -> list[Chunkd]:
    """Every registered chunkd (alive or dead), by id."""
    return sorted(reg.servers.values(), key=lambda s: s.id)


def chunkd_counts(reg: ChunkRegistry) -> tuple[int, int]:
    """(alive, dead) registered chunkds."""
    alive = sum(1 for s in reg.servers.values() if s.alive)
    return alive, len(reg.servers) - alive


def heartbeat_age(reg: ChunkRegistry, srv: Chunkd, now: float | None = None) -> float:
    """Seconds since ``srv``'s last heartbeat (``now``: the registry's clock)."""
    return (reg.clock() if now is None else now) - srv.last_heartbeat


def chunkd_status(reg: ChunkRegistry) -> list[dict[str, Any]]:
    """Every chunkd's row in ``cluster_status`` and ``GET /status``."""
    now = reg.clock()
    return [{"id": s.id, "addr": s.addr, "rack": s.rack, "alive": s.alive,
             "capacity_bytes": s.capacity_bytes, "used_bytes": s.used_bytes,
             "free_bytes": s.free_bytes, "chunks": len(s.handles), "draining": s.draining,
             "last_heartbeat_age": round(heartbeat_age(reg, s, now), 3)}
            for s in chunkds_by_id(reg)]


def pending_deletes(reg: ChunkRegistry) -> int:
    """Garbage replicas queued for deletion on their chunkds."""
    return sum(len(v) for v in reg.pending_delete.values())


def drain_remaining(master: Master, cid: str) -> int:
    """Replicas on ``cid`` that some file still needs."""
    srv = master.registry.servers.get(cid)
    if srv is None:
        return 0
    return sum(1 for h in srv.handles if h in master.ns.chunks)


def drain_status(master: Master, srv: Chunkd) -> dict[str, Any]:
    """A chunkd's drain progress (the ``drain`` reply)."""
    return {"id": srv.id, "draining": srv.draining, "alive": srv.alive,
            "remaining": drain_remaining(master, srv.id), "chunks": len(srv.handles)}


# ---------------------------------------------------------------- reports

class InodeCounts(NamedTuple):
    files: int            # regular files with a name (not in trash)
    dirs: int
    other: int            # neither a regular file nor a directory (symlinks...)
    trash: int            # unlinked files awaiting purge


def inode_counts(ns: Namespace) -> InodeCounts:
    files = dirs = other = 0
    for inode in ns.inodes.values():
        if inode.chunks is not None:
            if inode.ino not in ns.trash:
                files += 1
        elif inode.dir is not None:
            dirs += 1
        else:
            other += 1
    return InodeCounts(files, dirs, other, len(ns.trash))


def cluster_status(master: Master) -> dict[str, Any]:
    """The ``cluster_status`` reply (``gfs status``, ``gfs df``, the web page)."""
    ns, reg, oplog = master.ns, master.registry, master.oplog
    under, lost, over = replication_counts(ns, reg)
    inodes = inode_counts(ns)
    alive, dead = chunkd_counts(reg)
    return {"chunk_size": ns.chunk_size, "inodes": len(ns.inodes),
            "files": inodes.files, "trash_files": inodes.trash, "dirs": inodes.dirs,
            "chunks": len(ns.chunks), "under_goal": under, "lost": lost,
            "over_goal": over, "leases": len(reg.leases),
            "lease_extensions": master.leases.extensions, "lease_waits": master.leases.waits,
            "chunkds_alive": alive, "chunkds_dead": dead,
            **reg.totals(), "default_goal": master.cfg.replication_factor,
            "last_seq": oplog.last_seq, "checkpoint_seq": oplog.checkpoint_seq,
            "servers": chunkd_status(reg), "ha": ha_summary(master)}


def ha_summary(master: Master) -> dict[str, Any]:
    """Role, epoch and lag, for ``gfs status`` and the web page."""
    role = master.role
    out: dict[str, Any] = {"primary": role.rules(), "epoch": role.epoch,
                           "primary_url": role.url if role.rules() else role.primary_url,
                           "shadows": master.shipper.status()}
    if master.follower_lag is not None:
        out["following"] = master.follower_lag()
    return out


def status(master: Master) -> dict[str, Any]:
    """The ``GET /status`` reply."""
    ns, reg, oplog = master.ns, master.registry, master.oplog
    return {"role": "master", "protocol": PROTOCOL_VERSION, "inodes": len(ns.inodes),
            "chunks": len(ns.chunks), "chunk_size": ns.chunk_size,
            "chunks_without_replicas": sum(1 for h in ns.chunks if h not in reg.locations),
            "leases": len(reg.leases), "pending_deletes": pending_deletes(reg),
            "last_seq": oplog.last_seq, "durable_seq": oplog.durable_seq,
            "checkpoint_seq": oplog.checkpoint_seq, "fsyncs": oplog.fsyncs,
            "oplog_failed": None if oplog.failed is None else oplog.failed.message,
            **master.statfs(), "servers": chunkd_status(reg)}
