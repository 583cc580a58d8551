"""The namespace as plain data: the checkpoint image and the admin JSON dump.

``to_state``/``from_state`` round-trip a :class:`Namespace` through msgpack-able
lists and dicts (what a checkpoint holds). ``to_json`` is for people: names
decoded, nothing binary.
"""
from __future__ import annotations

import gc
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from master.state import quota
from master.state.namespace import ChunkTable, Directory, Inode, Namespace
from master.state.nodes import S_IFDIR, S_IFMT, S_IFREG, share

FORMAT = 2
# Format 2 (issue 15): one flat row per inode, chunks inline in their file's row
#   [ino, mode, uid, gid, nlink, atime_ns, mtime_ns, ctime_ns, size, goal, xattrs, body]
#   xattrs: None or [name, value, name, value, ...]
#   body:   directory [parent, next_cookie, name, ino, cookie, name, ino, cookie, ...]
#           regular file None or [index, handle, version, index, handle, version, ...]
#           symlink: target (bytes); device: rdev or None; fifo/socket: None
# "refs" is [handle, refcount, ...] for the chunks shared by more than one file.
# Format 1 (read, never written): "chunks" [[handle, version, refs]], one row per
# inode with its xattrs as pairs and its directory or chunk map (_from_state_v1).


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while millions of small containers are made: each
    collection would walk the whole namespace (the profile's main cost)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def to_state(ns: Namespace) -> dict[str, Any]:
    """A fresh, msgpack-able copy of the whole namespace (shares nothing)."""
    with gc_paused():
        versions = ns.chunks.versions
        return {
            "format": FORMAT,
            "chunk_size": ns.chunk_size,
            "next_ino": ns.next_ino,
            "next_handle": ns.next_handle,
            "inodes": [_row(i, versions) for i in ns.inodes.values()],
            "refs": [x for pair in ns.chunks.refs.items() for x in pair],
            "trash": [[ino, *entry] for ino, entry in ns.trash.items()],
            "epoch": [ns.epoch, ns.primary],
            "rids": list(ns.rids.items()),
            # limits and soft-limit times; the usage is rebuilt on load (quota.rebuild)
            "quotas": [q.state() for q in ns.quotas.values()],
        }


def _row(i: Inode, versions: dict[int, int]) -> list[Any]:
    body = i._body
    cls = body.__class__
    if cls is Directory:
        out: list[Any] = [body.parent, body.next_cookie]
        for name, ino, cookie in body.rows():
            out += (name, ino, cookie)
        body = out
    elif i.mode & S_IFMT == S_IFREG and body is not None:
        pairs = [(0, body)] if cls is int else body.items()
        body = [x for index, h in pairs for x in (index, h, versions[h])]
    xattrs = i._xattrs
    if xattrs is not None:
        xattrs = [x for pair in xattrs.items() for x in pair]
    return [i.ino, i.mode, i.uid, i.gid, i.nlink, i.atime_ns, i.mtime_ns, i.ctime_ns,
            i.size, i.goal, xattrs, body]


def from_state(state: dict[str, Any], default_goal: int) -> Namespace:
    with gc_paused():
        if state.get("format", 1) == 1:
            ns = _from_state_v1(state, default_goal)
        else:
            ns = _from_state_v2(state, default_goal)
        ns.trash = {ino: [when, parent, name]
                    for ino, when, parent, name in state.get("trash", [])}
        ns.epoch, ns.primary = state.get("epoch", [0, ""])
        ns.rids = dict(state.get("rids", []))
        ns.rebuild_parents()
        ns.quotas = {row[0]: quota.from_row(row) for row in state.get("quotas", [])}
        quota.rebuild(ns)
    return ns


def _from_state_v2(state: dict[str, Any], default_goal: int) -> Namespace:
    ns = Namespace(state["chunk_size"], default_goal)
    ns.next_ino = state["next_ino"]
    ns.next_handle = state["next_handle"]
    versions = ns.chunks.versions
    inodes: dict[int, Inode] = {}
    make = Inode.__new__
    for ino, mode, uid, gid, nlink, at, mt, ct, size, goal, xattrs, body in state["inodes"]:
        i = make(Inode)
        i.ino, i.mode, i.uid, i.gid, i.nlink = ino, share(mode), share(uid), share(gid), nlink
        # one int object for equal times (they mostly are)
        i.atime_ns = at
        i.mtime_ns = at if mt == at else mt
        i.ctime_ns = i.mtime_ns if ct == mt else ct
        i.size, i.goal, i.parent = size, goal, 0
        i._xattrs = None if not xattrs else dict(zip(xattrs[::2], xattrs[1::2]))
        fmt = mode & S_IFMT
        if fmt == S_IFDIR:
            i._body = _directory(body)
        elif fmt == S_IFREG and body:
            i._body = _chunks(body, versions)
        else:
            i._body = body
        inodes[ino] = i
    ns.inodes = inodes
    refs = state.get("refs", [])
    ns.chunks.refs = dict(zip(refs[::2], refs[1::2]))
    return ns


def _directory(body: list[Any]) -> Directory:
    d = Directory(body[0])
    d.next_cookie = body[1]
    add = d.add
    for k in range(2, len(body), 3):
        add(body[k], body[k + 1], body[k + 2])
    return d


def _chunks(body: list[int], versions: dict[int, int]) -> int | dict[int, int]:
    if len(body) == 3 and body[0] == 0:
        versions[body[1]] = body[2]
        return body[1]
    out = {}
    for k in range(0, len(body), 3):
        out[body[k]] = body[k + 1]
        versions[body[k + 1]] = body[k + 2]
    return out


def _from_state_v1(state: dict[str, Any], default_goal: int) -> Namespace:
    """A checkpoint written before issue 15 (format 1)."""
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
