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
from master.state.nodes import INO_BITS, S_IFDIR, S_IFMT, S_IFREG

FORMAT = 2
# Format 2 (issue 15): "inodes" is 13 columns, one value per inode in each:
#   ino, mode, uid, gid, nlink, atime_ns, mtime_ns, ctime_ns, size, goal, xattrs,
#   body, version
#   xattrs: None or [name, value, name, value, ...]
#   body:   directory [parent, next_cookie, name, ino, cookie, name, ino, cookie, ...]
#           regular file: None (no chunks), the handle of its only chunk (index 0;
#           its version in the version column), or [index, handle, version, ...]
#           symlink: target (bytes); device: rdev or None; fifo/socket: None
#   version: the chunk's version for a file with a handle as body, else None
# "refs" is [handle, refcount, ...] for the chunks shared by more than one file.
# Columns of plain ints pack and unpack fast (no list per inode).
# Format 1 (read, never written): "chunks" [[handle, version, refs]], one row per
# inode with its xattrs as pairs and its directory or chunk map (_from_state_v1).
COLUMNS = 13


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
        return {
            "format": FORMAT,
            "chunk_size": ns.chunk_size,
            "next_ino": ns.next_ino,
            "next_handle": ns.next_handle,
            "inodes": _columns(ns),
            "refs": [x for pair in ns.chunks.refs.items() for x in pair],
            "trash": [[ino, *entry] for ino, entry in ns.trash.items()],
            "epoch": [ns.epoch, ns.primary],
            "rids": list(ns.rids.items()),
            # limits and soft-limit times; the usage is rebuilt on load (quota.rebuild)
            "quotas": [q.state() for q in ns.quotas.values()],
        }


def _columns(ns: Namespace) -> list[list[Any]]:
    cols: list[list[Any]] = [[] for _ in range(COLUMNS)]
    (c_ino, c_mode, c_uid, c_gid, c_nlink, c_at, c_mt, c_ct, c_size, c_goal, c_xattrs,
     c_body, c_version) = cols
    versions = ns.chunks.versions
    for i in ns.inodes.values():
        c_ino.append(i.ino)
        c_mode.append(i.mode)
        c_uid.append(i.uid)
        c_gid.append(i.gid)
        c_nlink.append(i.nlink)
        c_at.append(i.atime_ns)
        c_mt.append(i.mtime_ns)
        c_ct.append(i.ctime_ns)
        c_size.append(i.size)
        c_goal.append(i.goal)
        xattrs = i._xattrs
        c_xattrs.append(None if xattrs is None else [x for kv in xattrs.items() for x in kv])
        body, version = _body(i, versions)
        c_body.append(body)
        c_version.append(version)
    return cols


def _body(i: Inode, versions: dict[int, int]) -> tuple[Any, int | None]:
    body = i._body
    cls = body.__class__
    if cls is Directory:
        out: list[Any] = [body.parent, body.next_cookie]
        for name, ino, cookie in body.rows():
            out += (name, ino, cookie)
        return out, None
    if i.mode & S_IFMT == S_IFREG and body is not None:
        if cls is int:
            return body, versions[body]
        return [x for index, h in body.items() for x in (index, h, versions[h])], None
    return body, None


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
    same = {}.setdefault           # one int object per mode, uid, gid value
    for (ino, mode, uid, gid, nlink, at, mt, ct, size, goal, xattrs, body,
         version) in zip(*state["inodes"]):
        i = make(Inode)
        i.ino, i.mode, i.uid, i.gid = ino, same(mode, mode), same(uid, uid), same(gid, gid)
        # one int object for equal times (they mostly are)
        i.nlink, i.atime_ns = nlink, at
        i.mtime_ns = mt = at if mt == at else mt
        i.ctime_ns = mt if ct == mt else ct
        i.size, i.goal, i.parent = size, goal, 0
        i._xattrs = dict(zip(xattrs[::2], xattrs[1::2])) if xattrs else None
        fmt = mode & S_IFMT
        if fmt == S_IFDIR:
            body = _directory(body)
        elif version is not None:
            versions[body] = version
        elif fmt == S_IFREG and body is not None:
            body = _chunks(body, versions)
        i._body = body
        inodes[ino] = i
    ns.inodes = inodes
    refs = state.get("refs", [])
    ns.chunks.refs = dict(zip(refs[::2], refs[1::2]))
    return ns


def _directory(body: list[Any]) -> Directory:
    d = Directory(body[0])
    d.next_cookie = body[1]
    packed, names = d._map, d._names
    for k in range(2, len(body), 3):
        name = body[k]
        packed[name] = body[k + 2] << INO_BITS | body[k + 1]
        names.append(name)
    return d


def _chunks(body: list[int], versions: dict[int, int]) -> int | dict[int, int]:
    out = {}
    for k in range(0, len(body), 3):
        out[body[k]] = body[k + 1]
        versions[body[k + 1]] = body[k + 2]
    return out if len(out) != 1 or 0 not in out else out[0]


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
