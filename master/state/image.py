"""The namespace as plain data: the checkpoint image and the admin JSON dump.

``to_state``/``from_state`` round-trip a :class:`Namespace` through msgpack-able
lists and dicts (what a checkpoint holds). ``to_json`` is for people: names
decoded, nothing binary.
"""
from __future__ import annotations

import stat
from typing import Any

from master.state import quota
from master.state.namespace import ChunkTable, Directory, Inode, Namespace

FORMAT = 1


def to_state(ns: Namespace) -> dict[str, Any]:
    """A fresh, msgpack-able copy of the whole namespace (shares nothing)."""
    return {
        "format": FORMAT,
        "chunk_size": ns.chunk_size,
        "next_ino": ns.next_ino,
        "next_handle": ns.next_handle,
        "chunks": [[h, v, r] for h, (v, r) in ns.chunks.items()],
        "inodes": [_inode(i) for i in ns.inodes.values()],
        "trash": [[ino, *entry] for ino, entry in ns.trash.items()],
        "epoch": [ns.epoch, ns.primary],
        "rids": list(ns.rids.items()),
        # limits and soft-limit times; the usage is rebuilt on load (quota.rebuild)
        "quotas": [q.state() for q in ns.quotas.values()],
    }


def _inode(i: Inode) -> list[Any]:
    extra: Any = None
    if i.dir is not None:
        d = i.dir
        extra = [d.parent, d.next_cookie, [list(row) for row in d.rows()]]
    elif i.chunks is not None:
        extra = list(i.chunks.items())
    return [i.ino, i.mode, i.uid, i.gid, i.nlink, i.atime_ns, i.mtime_ns, i.ctime_ns,
            i.size, i.rdev, i.goal, list(i.xattrs.items()), i.target, extra]


def from_state(state: dict[str, Any], default_goal: int) -> Namespace:
    ns = Namespace(state["chunk_size"], default_goal)
    ns.next_ino = state["next_ino"]
    ns.next_handle = state["next_handle"]
    ns.chunks = ChunkTable()
    for h, v, r in state["chunks"]:
        ns.chunks.new(h, v, r)
    ns.inodes = {}
    for row in state["inodes"]:
        (ino, mode, uid, gid, nlink, atime, mtime, ctime, size, rdev, goal, xattrs,
         target, extra) = row
        inode = Inode(ino, mode, uid, gid, nlink, atime, mtime, ctime, size=size, rdev=rdev,
                      goal=goal, xattrs=dict(xattrs), target=target)
        if stat.S_ISDIR(mode):
            parent, next_cookie, entries = extra
            d = Directory(parent)
            for name, child, cookie in entries:
                d.add(name, child, cookie)
            d.next_cookie = next_cookie
            inode.dir = d
        elif stat.S_ISREG(mode):
            inode.chunks = {index: handle for index, handle in extra}
        ns.inodes[ino] = inode
    ns.trash = {ino: [when, parent, name] for ino, when, parent, name in state.get("trash", [])}
    ns.epoch, ns.primary = state.get("epoch", [0, ""])
    ns.rids = dict(state.get("rids", []))
    ns.rebuild_parents()
    ns.quotas = {row[0]: quota.from_row(row) for row in state.get("quotas", [])}
    quota.rebuild(ns)
    return ns


def _text(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def to_json(ns: Namespace) -> dict[str, Any]:
    """The namespace for people to read: every value JSON-able."""
    inodes = []
    for i in sorted(ns.inodes.values(), key=lambda i: i.ino):
        row: dict[str, Any] = ns.attr(i)
        row["type"] = stat.filemode(i.mode)[0]
        row["mode_text"] = stat.filemode(i.mode)
        row["xattrs"] = {_text(k): _text(v) for k, v in i.xattrs.items()}
        if i.dir is not None:
            row["entries"] = {_text(n): ino for n, (ino, _c) in i.dir.entries.items()}
        if i.chunks is not None:
            row["chunks"] = {str(idx): [h, ns.chunks[h][0]] for idx, h in sorted(i.chunks.items())}
        if i.target:
            row["target"] = _text(i.target)
        inodes.append(row)
    return {"chunk_size": ns.chunk_size, "next_ino": ns.next_ino, "epoch": ns.epoch,
            "next_handle": ns.next_handle, "chunk_count": len(ns.chunks), "inodes": inodes,
            "quotas": [q.row(0) for q in ns.quotas.values()]}
