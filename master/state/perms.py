"""POSIX permission checks against the caller's ``ctx`` (uid, gid, groups).

A ``None`` ctx is root. Checks only read the namespace; a missing object is
left for :meth:`Namespace.apply` to report (ENOENT, ENOTDIR, ...).
"""
from __future__ import annotations

import stat
from dataclasses import dataclass

from gfsfs.common.errors import Code, GFSError

from master.state.namespace import Inode, Namespace, Record

R, W, X = 4, 2, 1


@dataclass(frozen=True)
class Ctx:
    uid: int
    gid: int
    gids: frozenset[int] = frozenset()

    @property
    def root(self) -> bool:
        return self.uid == 0

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.gids


def can(inode: Inode, ctx: Ctx | None, want: int) -> bool:
    if ctx is None or ctx.root:
        return True
    if ctx.uid == inode.uid:
        bits = inode.mode >> 6
    elif ctx.in_group(inode.gid):
        bits = inode.mode >> 3
    else:
        bits = inode.mode
    return bits & want == want


def require(inode: Inode, ctx: Ctx | None, want: int) -> None:
    if not can(inode, ctx, want):
        raise GFSError(Code.EACCES, f"permission denied on inode {inode.ino}")


def is_owner(inode: Inode, ctx: Ctx | None) -> bool:
    return ctx is None or ctx.root or ctx.uid == inode.uid


def _sticky(parent: Inode, victim: Inode | None, ctx: Ctx | None) -> None:
    if (victim is not None and parent.mode & stat.S_ISVTX and not is_owner(parent, ctx)
            and not is_owner(victim, ctx)):
        raise GFSError(Code.EPERM, "sticky directory")


def _parent(ns: Namespace, ino: int, ctx: Ctx | None) -> Inode | None:
    """The parent directory, checked for write+search; None if absent."""
    parent = ns.inodes.get(ino)
    if parent is not None and parent.is_dir:
        require(parent, ctx, W | X)
        return parent
    return None


def authorize(ns: Namespace, rec: Record, ctx: Ctx | None) -> Record:
    """Raise EACCES/EPERM if ``ctx`` may not apply ``rec``; the record to apply
    (setattr may clear set-id bits, as POSIX asks)."""
    op = rec["op"]
    if op in ("setxattr", "removexattr"):
        inode = ns.inodes.get(rec["ino"])
        if inode is not None:
            xattr_access(inode, rec["name"], ctx, W)
        return rec
    if op == "setattr":
        rec = dict(rec)
        by_handle = bool(rec.pop("write_handle", False))
        return rec if ctx is None or ctx.root else _setattr(ns, rec, ctx, by_handle)
    if ctx is None or ctx.root:
        return rec
    if op in ("create", "mkdir", "symlink", "link"):
        _parent(ns, rec["parent"], ctx)
        if op == "create" and stat.S_IFMT(rec["mode"]) in (stat.S_IFCHR, stat.S_IFBLK):
            raise GFSError(Code.EPERM, "only root may make device files")
    elif op in ("unlink", "rmdir"):
        parent = _parent(ns, rec["parent"], ctx)
        if parent is not None:
            _sticky(parent, ns.child(parent.ino, rec["name"]), ctx)
    elif op == "rename":
        _rename(ns, rec, ctx)
    elif op == "setgoal":
        inode = ns.inodes.get(rec["ino"])
        if inode is not None:
            targets = ns.subtree(inode.ino) if rec.get("recursive") else [inode]
            if not all(is_owner(t, ctx) for t in targets):
                raise GFSError(Code.EPERM, "only the owner (or root) may change the goal")
    else:
        raise GFSError(Code.EPERM, f"{op} is not for clients")
    return rec


def _rename(ns: Namespace, rec: Record, ctx: Ctx) -> None:
    sp = _parent(ns, rec["parent"], ctx)
    dp = _parent(ns, rec["new_parent"], ctx)
    src = ns.child(rec["parent"], rec["name"])
    dst = ns.child(rec["new_parent"], rec["new_name"])
    if sp is not None:
        _sticky(sp, src, ctx)
    if dp is not None:
        _sticky(dp, dst, ctx)
    if sp is not dp:       # a moved directory's ".." changes
        for moved in (src, dst if rec.get("flags", 0) & 2 else None):
            if moved is not None and moved.is_dir:
                require(moved, ctx, W)


SETID = stat.S_ISUID | stat.S_ISGID


def _kills_setid(inode: Inode, mode: int) -> bool:
    """Whether ``mode`` is ``inode``'s mode less some set-id bits: what the
    kernel asks for when a non-owner writes a set-id file (it sends a plain
    chmod; POSIX clears the bits whoever writes)."""
    old = inode.mode & 0o7777
    return mode & 0o7777 != old and (mode & 0o7777) | (old & SETID) == old


def _setattr(ns: Namespace, rec: Record, ctx: Ctx, by_handle: bool = False) -> Record:
    """``by_handle``: the change comes through a descriptor open for writing
    (ftruncate), which the kernel checked at open: a size change needs no
    write permission then."""
    inode = ns.inodes.get(rec["ino"])
    if inode is None:
        return rec
    owner = is_owner(inode, ctx)
    writable = by_handle or can(inode, ctx, W)
    if "uid" in rec and rec["uid"] != inode.uid:
        raise GFSError(Code.EPERM, "only root may change a file's owner")
    if "gid" in rec and rec["gid"] != inode.gid and not (owner and ctx.in_group(rec["gid"])):
        raise GFSError(Code.EPERM, "may not change the group")
    if "mode" in rec:
        if not owner and not (writable and _kills_setid(inode, rec["mode"])):
            raise GFSError(Code.EPERM, "only the owner may chmod")
        if not inode.is_dir and not ctx.in_group(rec.get("gid", inode.gid)):
            rec["mode"] &= ~stat.S_ISGID
    elif ("uid" in rec or "gid" in rec) and stat.S_ISREG(inode.mode):
        kill = stat.S_ISUID | (stat.S_ISGID if inode.mode & stat.S_IXGRP else 0)
        if inode.mode & kill:
            rec["mode"] = inode.mode & 0o7777 & ~kill
    if "size" in rec and not writable:
        raise GFSError(Code.EACCES, f"permission denied on inode {inode.ino}")
    if ("atime_ns" in rec or "mtime_ns" in rec) and not owner and not can(inode, ctx, W):
        raise GFSError(Code.EPERM, "only the owner may set times")
    return rec


def xattr_access(inode: Inode, name: bytes, ctx: Ctx | None, want: int) -> None:
    """user.* follow the file's mode; trusted.*/security.* are root's."""
    if name.startswith(b"user."):
        if want == W and stat.S_ISLNK(inode.mode) or (inode.is_dir and inode.mode & stat.S_ISVTX
                                        and want == W and not is_owner(inode, ctx)):
            raise GFSError(Code.EPERM, "user xattrs not allowed here")
        require(inode, ctx, want)
    elif name.startswith((b"trusted.", b"security.")):
        if want == W and not (ctx is None or ctx.root):
            raise GFSError(Code.EPERM, "only root may set this xattr")
    elif name.startswith(b"system."):
        raise GFSError(Code.ENOTSUP, "system xattrs (ACLs) are not supported")
    else:
        raise GFSError(Code.ENOTSUP, f"unknown xattr namespace {name!r}")
