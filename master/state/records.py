"""The op log's schema: one constructor per kind of record.

A *record* is a msgpack map ``{"op": KIND, ...}`` carrying everything a
mutation needs that is not derived from the current state (new inode
numbers, chunk handles, timestamps), so that :meth:`Namespace.apply` replays
it to the same state (see :mod:`master.state.namespace`). Records are written to
the op log as they are built here: the keys, their order and the types of
the values are the on-disk format, and old logs must keep replaying. Never
rename, reorder or retype a field; a new field goes last and ``apply`` must
accept records without it. ``tests/unit/test_records.py`` pins every kind.

Field types used below:

- ``ino``, ``parent``, ``new_parent``, ``src``: inode numbers (int);
- ``name``, ``new_name``, ``target``, ``value``: bytes;
- ``mode``, ``rdev``, ``flags``: ints (POSIX mode bits, device number,
  RENAME_* / XATTR_* flags);
- ``uid``, ``gid``: ints;
- ``now``, ``mtime_ns``, ``atime_ns``: nanoseconds since the epoch (int);
  ``now`` defaults to :func:`time.time_ns` at construction;
- ``handle``, ``old``, ``new``, ``next_handle``: chunk handles (int);
  ``version``: a chunk version (int); ``index``: a chunk index in a file.

Every ``op`` :meth:`Namespace.apply` knows is in :data:`OPS` and has the
constructor of the same name.
"""
from __future__ import annotations

import time

from master.state.namespace import Record


def _now(now: int | None) -> int:
    return time.time_ns() if now is None else now


# ---------------------------------------------------------------- namespace

def init(now: int | None = None) -> Record:
    """The first record of a new file system: the root's timestamps."""
    return {"op": "init", "now": _now(now)}


def create(parent: int, name: bytes, mode: int, uid: int, gid: int, rdev: int, ino: int,
           now: int | None = None) -> Record:
    """A non-directory, non-symlink inode ``ino`` (a regular file has chunks)."""
    return {"op": "create", "parent": parent, "name": name, "mode": mode, "uid": uid,
            "gid": gid, "rdev": rdev, "ino": ino, "now": _now(now)}


def mkdir(parent: int, name: bytes, mode: int, uid: int, gid: int, ino: int,
          now: int | None = None) -> Record:
    return {"op": "mkdir", "parent": parent, "name": name, "mode": mode, "uid": uid,
            "gid": gid, "ino": ino, "now": _now(now)}


def symlink(parent: int, name: bytes, target: bytes, uid: int, gid: int, ino: int,
            now: int | None = None) -> Record:
    return {"op": "symlink", "parent": parent, "name": name, "target": target, "uid": uid,
            "gid": gid, "ino": ino, "now": _now(now)}


def link(ino: int, parent: int, name: bytes, now: int | None = None) -> Record:
    return {"op": "link", "ino": ino, "parent": parent, "name": name, "now": _now(now)}


def unlink(parent: int, name: bytes, now: int | None = None) -> Record:
    """Remove a name; a regular file whose last name goes moves to the trash."""
    return {"op": "unlink", "parent": parent, "name": name, "now": _now(now)}


def rmdir(parent: int, name: bytes, now: int | None = None) -> Record:
    return {"op": "rmdir", "parent": parent, "name": name, "now": _now(now)}


def rename(parent: int, name: bytes, new_parent: int, new_name: bytes, flags: int,
           now: int | None = None) -> Record:
    return {"op": "rename", "parent": parent, "name": name, "new_parent": new_parent,
            "new_name": new_name, "flags": flags, "now": _now(now)}


def setattr(ino: int, *, mode: int | None = None, uid: int | None = None,
            gid: int | None = None, size: int | None = None, atime_ns: int | None = None,
            mtime_ns: int | None = None, write_handle: bool = False,
            now: int | None = None) -> Record:
    """Only the attributes given (not None) are in the record. ``write_handle``
    (an ftruncate through a file opened for writing) is for the permission
    check (:func:`master.state.perms.authorize` removes it): it is never logged."""
    rec: Record = {"op": "setattr", "ino": ino}
    for key, value in (("mode", mode), ("uid", uid), ("gid", gid), ("size", size),
                       ("atime_ns", atime_ns), ("mtime_ns", mtime_ns)):
        if value is not None:
            rec[key] = value
    if write_handle:
        rec["write_handle"] = True
    rec["now"] = _now(now)
    return rec


def setxattr(ino: int, name: bytes, value: bytes, flags: int, now: int | None = None) -> Record:
    return {"op": "setxattr", "ino": ino, "name": name, "value": value, "flags": flags,
            "now": _now(now)}


def removexattr(ino: int, name: bytes, now: int | None = None) -> Record:
    return {"op": "removexattr", "ino": ino, "name": name, "now": _now(now)}


def setgoal(ino: int, goal: int, recursive: bool, now: int | None = None) -> Record:
    """The replication goal of ``ino`` (and, if ``recursive``, of all below it)."""
    return {"op": "setgoal", "ino": ino, "goal": goal, "recursive": recursive,
            "now": _now(now)}


def extend(ino: int, size: int, mtime_ns: int, now: int | None = None) -> Record:
    """A write ended at ``size``: the file grows to it (never shrinks)."""
    return {"op": "extend", "ino": ino, "size": size, "mtime_ns": mtime_ns, "now": _now(now)}


# ---------------------------------------------------------------- chunks

def add_chunk(ino: int, index: int, handle: int, version: int) -> Record:
    """A new chunk ``handle`` at ``index`` of file ``ino`` (allocated for a lease)."""
    return {"op": "add_chunk", "ino": ino, "index": index, "handle": handle,
            "version": version}


def drop_chunk(ino: int, index: int, handle: int) -> Record:
    """Undo an :func:`add_chunk` no chunkd accepted."""
    return {"op": "drop_chunk", "ino": ino, "index": index, "handle": handle}


def set_version(handle: int, version: int) -> Record:
    """Chunk ``handle`` is at ``version`` (a lease grant or revocation, an adoption)."""
    return {"op": "set_version", "handle": handle, "version": version}


def set_versions(versions: list[list[int]]) -> Record:
    """Many :func:`set_version` at once: ``[[handle, version], ...]``."""
    return {"op": "set_versions", "versions": versions}


# ---------------------------------------------------------------- snapshots

def snapshot(src: int, parent: int, name: bytes, ino: int, count: int,
             now: int | None = None) -> Record:
    """Copy ``src`` to ``name`` in ``parent``; the copies get inode numbers
    ``ino`` .. ``ino + count - 1`` (``Namespace.snapshot_order``)."""
    return {"op": "snapshot", "src": src, "parent": parent, "name": name, "ino": ino,
            "count": count, "now": _now(now)}


def reserve_handles(next_handle: int) -> Record:
    """Chunk handles below ``next_handle`` are taken (a copy-on-write's new one)."""
    return {"op": "reserve_handles", "next_handle": next_handle}


def cow(ino: int, index: int, old: int, new: int, version: int,
        now: int | None = None) -> Record:
    """Chunk ``index`` of ``ino`` is now ``new``, a copy of shared ``old``."""
    return {"op": "cow", "ino": ino, "index": index, "old": old, "new": new,
            "version": version, "now": _now(now)}


# ---------------------------------------------------------------- trash

def purge(inos: list[int]) -> Record:
    """Drop trashed inodes for good; their chunks become garbage."""
    return {"op": "purge", "inos": inos}


def restore(ino: int, parent: int, name: bytes, now: int | None = None) -> Record:
    """Give trashed ``ino`` the name ``name`` in ``parent``."""
    return {"op": "restore", "ino": ino, "parent": parent, "name": name, "now": _now(now)}


# ---------------------------------------------------------------- quotas

def setquota(ino: int, bytes: int = 0, inodes: int = 0, soft_bytes: int = 0,
             soft_inodes: int = 0, grace_ns: int = 7 * 86400 * 10**9,
             now: int | None = None) -> Record:
    """The quota of directory ``ino`` (master.state.quota): hard and soft limits
    on the bytes and inodes below it (0: none), the soft limits' grace (ns)."""
    return {"op": "setquota", "ino": ino, "bytes": bytes, "inodes": inodes,
            "soft_bytes": soft_bytes, "soft_inodes": soft_inodes, "grace_ns": grace_ns,
            "now": _now(now)}


def rmquota(ino: int, now: int | None = None) -> Record:
    """Directory ``ino`` has no quota any more."""
    return {"op": "rmquota", "ino": ino, "now": _now(now)}


# ---------------------------------------------------------------- masters

def epoch(epoch: int, primary: str) -> Record:
    """A promotion (docs/ha.md): from here on ``primary`` (its URL) is the
    primary master, in ``epoch`` (higher than every epoch before it)."""
    return {"op": "epoch", "epoch": epoch, "primary": primary}


def with_rid(rec: Record, rid: int | None) -> Record:
    """``rec`` carrying the client's request id (last field): applied once,
    a retry with the same id answers as the first attempt did."""
    if rid is not None:
        rec["rid"] = rid
    return rec


OPS = ("init", "create", "mkdir", "symlink", "link", "unlink", "rmdir", "rename", "setattr",
       "setxattr", "removexattr", "setgoal", "extend", "add_chunk", "drop_chunk",
       "set_version", "set_versions", "snapshot", "reserve_handles", "cow", "purge",
       "restore", "epoch", "setquota", "rmquota")
