"""What an export session may do: the export's rules applied to each request
of a mount that proved itself with a session (:mod:`master.exports.rules`,
docs/security.md#exports).

- Only the RPCs of :data:`SESSION_RPCS` (the namespace and the data path);
  the chunkds', the admin's and the CLI's are the cluster secret's alone.
- ``ro``: only :data:`READ_RPCS`; anything else answers EROFS.
- Every inode a request names (:data:`INODE_FIELDS`) must be the session's
  root or below it (by any of its names, or the name it had when it went to
  the trash); anything else answers ENOENT, as if it did not exist. ``..``
  of the root is the root.
- The caller is always named (a request without ``ctx`` acts as root), and
  root is squashed to ``maproot`` where the export says so. New inodes are
  owned by the caller: a non-root caller cannot make a file of another uid,
  nor of a group it is not in (but a setgid directory's).
- Reading chunks needs read permission and a lease write permission (or
  ownership: the owner writes through a descriptor of a file it made 0444),
  checked against the caller, since the kernel's checks of a mount that
  squashes root were made for the local root.
"""
from __future__ import annotations

import stat
from typing import Any

from gfsfs.common.errors import Code, GFSError

from master.exports.rules import Export
from master.state.namespace import ROOT_INO, Inode, Namespace
from master.state.perms import R, W, Ctx, can, is_owner

SESSION_RPCS = frozenset({
    "lookup", "getattr", "setattr", "create", "mkdir", "symlink", "link", "unlink",
    "rmdir", "rename", "readdir", "readlink", "setxattr", "getxattr", "listxattr",
    "removexattr", "statfs", "chunks", "lease", "append_lease", "extend", "setgoal",
    "fileinfo", "snapshot"})
READ_RPCS = frozenset({
    "lookup", "getattr", "readdir", "readlink", "getxattr", "listxattr", "statfs", "chunks",
    "fileinfo"})
INODE_FIELDS: dict[str, tuple[str, ...]] = {
    "lookup": ("parent",), "create": ("parent",), "mkdir": ("parent",),
    "symlink": ("parent",), "unlink": ("parent",), "rmdir": ("parent",),
    "link": ("ino", "parent"), "rename": ("parent", "new_parent"),
    "snapshot": ("src", "parent"), "statfs": ("ino",)}
MAKERS = frozenset({"create", "mkdir", "symlink"})
MAX_DEPTH = 4096


def within(ns: Namespace, ino: int, root: int) -> bool:
    """Whether inode ``ino`` is ``root`` or below it; True for an inode that
    does not exist (the handler answers ENOENT itself)."""
    inode = ns.inodes.get(ino)
    if inode is None:
        return True
    if root == ROOT_INO:
        return True
    return _below(ns, inode, root)


def _below(ns: Namespace, inode: Inode, root: int) -> bool:
    if inode.dir is not None:
        return _dir_below(ns, inode.ino, root)
    parents = ns.parents_of(inode)
    if not parents and inode.ino in ns.trash:          # open, unlinked: where it was
        parents = [ns.trash[inode.ino][1]]
    return any(_dir_below(ns, p, root) for p in parents)


def _dir_below(ns: Namespace, ino: int, root: int) -> bool:
    for _ in range(MAX_DEPTH):
        if ino == root:
            return True
        if ino == ROOT_INO:
            return False
        d = ns.inodes.get(ino)
        if d is None or d.dir is None:
            return False
        ino = d.dir.parent
    return False


def caller_ctx(req: dict[str, Any], export: Export) -> Ctx:
    """The request's caller (root when it names none), squashed."""
    raw = req.get("ctx")
    ctx = Ctx(0, 0)
    if raw is not None:
        uid, gid, gids = (raw.get(k) for k in ("uid", "gid", "gids")) \
            if isinstance(raw, dict) else (None, None, None)
        gids = [] if gids is None else gids
        if not (_id(uid) and _id(gid) and isinstance(gids, list) and all(map(_id, gids))):
            raise GFSError(Code.BADREQ, "ctx must be {uid, gid, [gids]} of ids")
        ctx = Ctx(uid, gid, frozenset(gids))         # type: ignore[arg-type]
    if ctx.root and export.maproot is not None:
        uid, gid = export.maproot
        ctx = Ctx(uid, gid)
    return ctx


def _id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << 32) - 1


def _ctx_dict(ctx: Ctx) -> dict[str, Any]:
    return {"uid": ctx.uid, "gid": ctx.gid, "gids": sorted(ctx.gids)}


def apply(ns: Namespace, name: str, req: dict[str, Any], export: Export, root: int) -> dict:
    """``req`` as this session may send it (a new dict), or raise: EPERM for
    an RPC sessions may not call, EROFS, ENOENT for an inode outside."""
    if name not in SESSION_RPCS:
        raise GFSError(Code.EPERM, f"{name} is not for export sessions")
    if export.readonly and name not in READ_RPCS:
        raise GFSError(Code.EROFS, f"export {export.name} is read-only")
    req = dict(req)
    if name == "statfs" and req.get("ino") is None:
        req["ino"] = root
    for key in INODE_FIELDS.get(name, ("ino",)):
        value = req.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise GFSError(Code.BADREQ, f"field {key!r} must be an inode number")
        if not within(ns, value, root):
            raise GFSError(Code.ENOENT, f"no inode {value}")
    if name == "lookup" and req.get("parent") == root and req.get("name") in (b"..", ".."):
        req["name"] = b"."                      # the root's parent is the root
    ctx = caller_ctx(req, export)
    req["ctx"] = _ctx_dict(ctx)
    if name in MAKERS:
        _owner(ns, req, ctx)
    elif name in ("chunks", "lease", "append_lease", "extend"):
        _data_access(ns, name, req, ctx)
    return req


def _owner(ns: Namespace, req: dict[str, Any], ctx: Ctx) -> None:
    if ctx.root:
        return
    req["uid"] = ctx.uid
    gid = req.get("gid")
    parent = ns.inodes.get(req.get("parent"))     # type: ignore[arg-type]
    setgid_gid = parent.gid if parent is not None and parent.mode & stat.S_ISGID else None
    if not isinstance(gid, int) or not (ctx.in_group(gid) or gid == setgid_gid):
        req["gid"] = ctx.gid


def _data_access(ns: Namespace, name: str, req: dict[str, Any], ctx: Ctx) -> None:
    inode = ns.inodes.get(req.get("ino"))         # type: ignore[arg-type]
    if inode is None or ctx.root:
        return
    want = R if name == "chunks" else W
    if not (can(inode, ctx, want) or is_owner(inode, ctx)):
        raise GFSError(Code.EACCES, f"permission denied on inode {inode.ino}")
