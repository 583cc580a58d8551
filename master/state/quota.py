"""Per-directory quotas (as MooseFS and CephFS have them): the accounting.

A quota sits on a directory ``Q`` and limits what is *below* it: the bytes
(the logical sizes of the regular files, as the master knows them: a sparse
file counts its full size) and the inodes (files, directories, symlinks,
fifos...; ``Q`` itself is not counted). An inode with several names (hard
links) counts once in each quota that one of its names is under. Trashed
files (no name left) count nowhere.

Limits: ``bytes`` / ``inodes`` are hard; ``soft_bytes`` / ``soft_inodes`` may
be exceeded for ``grace_ns``, after which they act as hard limits until the
usage is back under them (a grace of 0: a soft limit is hard). 0 means no
limit. Every ancestor's quota applies (nested quotas).

The limits and the moments a soft limit was first exceeded (``since_*``) are
namespace state: set by the ``setquota``/``rmquota`` records, updated by
:meth:`Namespace.apply` from the records' own ``now``, carried by checkpoints,
so replay and shadow masters compute the same. The usage is derived: kept
exact by every record that changes it, and rebuilt from the tree when a
checkpoint is loaded (:func:`rebuild`); it is never logged.

Enforcement is in ``apply`` (so a refused record changes nothing and replay
refuses the same): a record whose growth takes a quota over a limit in force
raises ``QUOTA`` (EDQUOT at the mount, HTTP 403). Shrinking is always allowed,
even above a limit. The master also checks before allocating a chunk beyond
the end of a file (:meth:`Namespace.check_growth`), so a write that cannot fit
is refused before its bytes are sent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gfsfs.common.errors import Code, GFSError

if TYPE_CHECKING:
    from master.state.namespace import Inode, Namespace

ROOT_INO = 1
LIMITS = ("bytes", "inodes", "soft_bytes", "soft_inodes")
DEFAULT_GRACE_NS = 7 * 86400 * 10**9        # a soft limit given without a grace: 7 days

Deltas = dict[int, list[int]]               # quota dir ino -> [bytes, inodes]


@dataclass(slots=True)
class Quota:
    ino: int
    bytes: int = 0
    inodes: int = 0
    soft_bytes: int = 0
    soft_inodes: int = 0
    grace_ns: int = DEFAULT_GRACE_NS
    since_bytes: int = 0          # when used_bytes went over soft_bytes (0: it is not)
    since_inodes: int = 0
    used_bytes: int = 0           # derived, never logged
    used_inodes: int = 0

    def state(self) -> list[int]:
        """The persistent part (a checkpoint row)."""
        return [self.ino, self.bytes, self.inodes, self.soft_bytes, self.soft_inodes,
                self.grace_ns, self.since_bytes, self.since_inodes]

    def soft_expired(self, kind: str, now: int) -> bool:
        """Whether the soft limit of ``kind`` ("bytes"/"inodes") acts as hard now."""
        since = getattr(self, "since_" + kind)
        return bool(since) and now - since >= self.grace_ns

    def row(self, now: int) -> dict[str, Any]:
        return {"ino": self.ino, "bytes": self.bytes, "inodes": self.inodes,
                "soft_bytes": self.soft_bytes, "soft_inodes": self.soft_inodes,
                "grace": self.grace_ns / 1e9, "used_bytes": self.used_bytes,
                "used_inodes": self.used_inodes, "since_bytes": self.since_bytes,
                "since_inodes": self.since_inodes,
                "soft_bytes_expired": self.soft_expired("bytes", now),
                "soft_inodes_expired": self.soft_expired("inodes", now)}


def from_row(row: list[int]) -> Quota:
    return Quota(*row)


# ---------------------------------------------------------------- which quotas

def quota_dirs(ns: Namespace, ino: int, moved: dict[int, int] | None = None) -> list[int]:
    """The quota directories at or above directory ``ino`` (nearest first).
    ``moved``: directory -> the parent it would have (a rename being checked)."""
    out: list[int] = []
    if not ns.quotas:
        return out
    seen = 0
    while True:
        if ino in ns.quotas:
            out.append(ino)
        if ino == ROOT_INO:
            return out
        seen += 1
        if seen > len(ns.inodes):            # a cycle cannot be, but never loop
            return out
        parent = moved.get(ino) if moved else None
        if parent is None:
            d = ns.inodes[ino].dir
            assert d is not None
            parent = d.parent
        ino = parent


def inode_quotas(ns: Namespace, inode: Inode, moved: dict[int, int] | None = None,
                 reparent: dict[int, list[int]] | None = None) -> set[int]:
    """The quotas ``inode`` counts in: those at or above the directory of
    each of its names (a directory: of its parent, so not its own)."""
    if not ns.quotas:
        return set()
    if inode.dir is not None:
        if inode.ino == ROOT_INO:
            return set()
        parent = moved.get(inode.ino, inode.dir.parent) if moved else inode.dir.parent
        return set(quota_dirs(ns, parent, moved))
    parents = reparent.get(inode.ino) if reparent else None
    if parents is None:
        parents = ns.parents_of(inode)
    out: set[int] = set()
    for p in set(parents):
        out.update(quota_dirs(ns, p, moved))
    return out


def size_of(inode: Inode) -> int:
    return inode.size if inode.chunks is not None else 0


def add(deltas: Deltas, quotas: Any, nbytes: int, ninodes: int) -> None:
    for q in quotas:
        d = deltas.setdefault(q, [0, 0])
        d[0] += nbytes
        d[1] += ninodes


# ---------------------------------------------------------------- check, charge

def check(ns: Namespace, deltas: Deltas, now: int) -> None:
    """Raise QUOTA if a positive delta takes a quota over a limit in force."""
    for qino, (db, di) in deltas.items():
        q = ns.quotas.get(qino)
        if q is None:
            continue
        for kind, delta, used, hard, soft in (
                ("bytes", db, q.used_bytes, q.bytes, q.soft_bytes),
                ("inodes", di, q.used_inodes, q.inodes, q.soft_inodes)):
            if delta <= 0:
                continue
            new = used + delta
            if hard and new > hard:
                raise GFSError(Code.QUOTA, f"quota of directory inode {qino}: {new} {kind} "
                                           f"over the limit of {hard}")
            if soft and new > soft:
                since = getattr(q, "since_" + kind) or now
                if now - since >= q.grace_ns:
                    raise GFSError(Code.QUOTA, f"quota of directory inode {qino}: {new} "
                                               f"{kind} over the soft limit of {soft}, "
                                               f"exceeded for longer than the grace")


def charge(ns: Namespace, deltas: Deltas, now: int) -> None:
    """Apply checked deltas (and note when a soft limit is first exceeded)."""
    for qino, (db, di) in deltas.items():
        q = ns.quotas.get(qino)
        if q is None:
            continue
        q.used_bytes += db
        q.used_inodes += di
        note_soft(q, now)


def note_soft(q: Quota, now: int) -> None:
    if q.soft_bytes and q.used_bytes > q.soft_bytes:
        q.since_bytes = q.since_bytes or now
    else:
        q.since_bytes = 0
    if q.soft_inodes and q.used_inodes > q.soft_inodes:
        q.since_inodes = q.since_inodes or now
    else:
        q.since_inodes = 0


# ---------------------------------------------------------------- deltas of records

def move_deltas(ns: Namespace, moves: list[tuple[Inode, int, int]], deltas: Deltas) -> None:
    """What moving each ``(inode, old parent dir, new parent dir)`` at once
    (a rename; an exchange is two) does to the quotas: the whole subtree of a
    directory leaves the quotas above the old parent that are not above the
    new one and enters those above the new one that were not above the old.
    A file with several names is reckoned exactly, from all its names."""
    if not ns.quotas:
        return
    moved = {i.ino: new for i, _old, new in moves if i.dir is not None}
    reparent: dict[int, list[int]] = {}
    for i, old, new in moves:
        if i.dir is None:
            ps = list(ns.parents_of(i))
            ps.remove(old)
            ps.append(new)
            reparent[i.ino] = ps
    multi: dict[int, Inode] = {}
    for inode, old, new in moves:
        before, after = set(quota_dirs(ns, old)), set(quota_dirs(ns, new))
        if before == after:
            continue
        lose, gain = before - after, after - before
        for i in (ns.subtree(inode.ino) if inode.dir is not None else [inode]):
            if i.dir is None and i.nlink > 1:
                multi[i.ino] = i
                continue
            sz = size_of(i)
            add(deltas, lose, -sz, -1)
            add(deltas, gain, sz, 1)
    for i in multi.values():
        before, after = inode_quotas(ns, i), inode_quotas(ns, i, moved, reparent)
        sz = size_of(i)
        add(deltas, before - after, -sz, -1)
        add(deltas, after - before, sz, 1)


def usage(ns: Namespace, ino: int) -> tuple[int, int]:
    """(bytes, inodes) below directory ``ino``, counted from the tree."""
    nbytes = ninodes = 0
    for i in ns.subtree(ino):
        if i.ino != ino:
            ninodes += 1
            nbytes += size_of(i)
    return nbytes, ninodes


def rebuild(ns: Namespace) -> None:
    """Every quota's usage from the tree (after loading a checkpoint)."""
    for q in ns.quotas.values():
        q.used_bytes, q.used_inodes = usage(ns, q.ino)


def dir_path(ns: Namespace, ino: int) -> str | None:
    """The path of directory ``ino`` (None if it has none)."""
    parts: list[str] = []
    seen = 0
    while ino != ROOT_INO:
        inode = ns.inodes.get(ino)
        if inode is None or inode.dir is None or seen > len(ns.inodes):
            return None
        parent = ns.inodes.get(inode.dir.parent)
        if parent is None or parent.dir is None:
            return None
        name = next((n for n, (child, _c) in parent.dir.entries.items() if child == ino), None)
        if name is None:
            return None
        parts.append(name.decode("utf-8", "backslashreplace"))
        ino = parent.ino
        seen += 1
    return "/" + "/".join(reversed(parts))
