"""The master's namespace: inodes, directory entries, chunk maps, chunk table.

Every mutation is a *record*: a plain dict ``{"op": NAME, ...}`` that carries
everything not derived from the current state (new inode numbers, chunk
handles, timestamps). :meth:`Namespace.apply` either raises :class:`GFSError`
having changed nothing, or applies the record completely. The same function
runs live and when the op log is replayed, so replay rebuilds the same state.

Concurrency invariant: everything here is synchronous. Callers never await
between checking a record (permissions, then ``apply``) and appending it to
the op log.

Replica locations are not here: they are soft state (see :mod:`master.chunks.registry`).
"""
from __future__ import annotations

import stat
from typing import Any

from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import (MAX_NAME, MAX_SYMLINK, RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_CREATE, XATTR_REPLACE)

from master.state import quota as quotas
from master.state.nodes import ChunkMap, ChunkTable, Directory, Inode
from master.state.quota import Quota

__all__ = ["ChunkMap", "ChunkTable", "Directory", "Inode", "Namespace", "ROOT_INO", "Record"]

ROOT_INO = 1
MAX_FILE_SIZE = 1 << 50          # EFBIG beyond this
MAX_LINKS = 65000                # EMLINK beyond this
MAX_XATTR_NAME = 255
MAX_XATTR_VALUE = 64 * 1024
MAX_GOAL = 16                    # largest replication goal (as [master] replication_factor)
FILE_TYPES = (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)

Record = dict[str, Any]


def check_name(name: bytes) -> bytes:
    if not isinstance(name, bytes) or name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
        raise GFSError(Code.EINVAL, f"invalid file name {name!r}")
    if len(name) > MAX_NAME:
        raise GFSError(Code.ENAMETOOLONG, f"name over {MAX_NAME} bytes")
    return name


RID_KEEP = 100_000        # request ids remembered (the newest; docs/ha.md)


class Namespace:
    """Inodes, directories, per-file chunk maps and the chunk table."""

    def __init__(self, chunk_size: int, default_goal: int = 3) -> None:
        self.chunk_size = chunk_size
        self.inodes: dict[int, Inode] = {}
        self.chunks = ChunkTable()                 # handle -> [version, refcount]
        self.next_ino = ROOT_INO + 1
        self.next_handle = 1
        self.garbage: set[int] = set()             # handles no file references any more
        # Lazy deletion (GFS §4.4): a regular file whose last link goes is kept,
        # nameless, until it is purged after trash_time -- so files that are still
        # open keep working. ino -> [deleted_ns, parent ino, name]
        self.trash: dict[int, list[Any]] = {}
        # the master epoch (raised by each promotion, docs/ha.md) and its primary
        self.epoch = 0
        self.primary = ""
        # request id -> what applying its record returned, for the last RID_KEEP
        # records that carried one: a mutation retried across a failover (or a
        # lost reply) answers as the first attempt did instead of applying twice
        self.rids: dict[int, int | None] = {}
        # per-directory quotas (master.state.quota): directory ino -> Quota
        self.quotas: dict[int, Quota] = {}
        # the directories of a non-directory's names after its first (hard links)
        self.more_parents: dict[int, list[int]] = {}
        self.inodes[ROOT_INO] = Inode(ROOT_INO, stat.S_IFDIR | 0o755, 0, 0, 2, 0, 0, 0,
                                      goal=default_goal, dir=Directory(ROOT_INO))

    def replace(self, other: Namespace) -> None:
        """Become ``other`` (a shadow taking its primary's checkpoint): every
        holder of this object sees the new state."""
        for name, value in vars(other).items():
            setattr(self, name, value)

    # ------------------------------------------------------------ lookups

    def get(self, ino: int) -> Inode:
        inode = self.inodes.get(ino)
        if inode is None:
            raise GFSError(Code.ENOENT, f"no inode {ino}")
        return inode

    def get_dir(self, ino: int) -> Inode:
        inode = self.get(ino)
        if inode.dir is None:
            raise GFSError(Code.ENOTDIR, f"inode {ino} is not a directory")
        return inode

    def get_file(self, ino: int) -> Inode:
        inode = self.get(ino)
        if inode.chunks is None:
            raise GFSError(Code.EISDIR if inode.is_dir else "EINVAL",
                           f"inode {ino} is not a regular file")
        return inode

    def lookup(self, parent: int, name: bytes) -> Inode:
        pdir = self.get_dir(parent)
        assert pdir.dir is not None
        if name == b".":
            return pdir
        if name == b"..":
            return self.get(pdir.dir.parent)
        ino = pdir.dir.get(check_name(name))
        if ino is None:
            raise GFSError(Code.ENOENT, f"no entry {name!r} in {parent}")
        return self.inodes[ino]

    def child(self, parent: int, name: bytes) -> Inode | None:
        """The inode ``name`` names in ``parent``, None if absent or invalid."""
        pdir = self.inodes.get(parent)
        if pdir is None or pdir.dir is None:
            return None
        ino = pdir.dir.get(name)
        return None if ino is None else self.inodes.get(ino)

    def attr(self, inode: Inode) -> dict[str, Any]:
        return {"ino": inode.ino, "mode": inode.mode, "nlink": inode.nlink, "uid": inode.uid,
                "gid": inode.gid, "size": inode.size, "atime_ns": inode.atime_ns,
                "mtime_ns": inode.mtime_ns, "ctime_ns": inode.ctime_ns, "goal": inode.goal,
                "rdev": inode.rdev, "blocks": self.blocks(inode), "nxattr": len(inode.xattrs)}

    def blocks(self, inode: Inode) -> int:
        if not inode.chunks:
            return 0
        cs, size = self.chunk_size, inode.size
        total = sum(min(cs, max(0, size - index * cs)) for index in inode.chunks)
        return (total + 511) // 512

    def readdir(self, ino: int, offset: int, limit: int) -> list[tuple[bytes, int, int]]:
        inode = self.get_dir(ino)
        assert inode.dir is not None
        return inode.dir.after(offset, limit)

    def readlink(self, ino: int) -> bytes:
        inode = self.get(ino)
        if not stat.S_ISLNK(inode.mode):
            raise GFSError(Code.EINVAL, f"inode {ino} is not a symlink")
        return inode.target

    def chunk_at(self, ino: int, index: int) -> int | None:
        chunks = self.get_file(ino).chunks
        assert chunks is not None
        return chunks.get(index)

    def version(self, handle: int) -> int | None:
        return self.chunks.version(handle)

    def is_ancestor(self, anc: int, ino: int) -> bool:
        """Whether directory ``anc`` is ``ino`` or one of its ancestors."""
        while True:
            if ino == anc:
                return True
            if ino == ROOT_INO:
                return False
            inode = self.inodes[ino]
            assert inode.dir is not None
            ino = inode.dir.parent

    def subtree(self, ino: int) -> list[Inode]:
        """``ino`` and, for a directory, every inode below it (each once)."""
        seen: set[int] = set()
        out: list[Inode] = []
        stack = [ino]
        while stack:
            inode = self.inodes.get(stack.pop())
            if inode is None or inode.ino in seen:
                continue
            seen.add(inode.ino)
            out.append(inode)
            if inode.dir is not None:
                stack.extend(inode.dir.children())
        return out

    # ------------------------------------------------------------ names, quotas

    def parents_of(self, inode: Inode) -> list[int]:
        """The directory of each name of non-directory ``inode`` (one per name;
        a new list)."""
        if not inode.parent:
            return []
        more = self.more_parents.get(inode.ino)
        return [inode.parent, *more] if more else [inode.parent]

    def _named(self, inode: Inode, parent: int) -> None:
        """``inode`` got a name in directory ``parent``."""
        if inode.dir is not None:
            return
        if not inode.parent:
            inode.parent = parent
        else:
            self.more_parents.setdefault(inode.ino, []).append(parent)

    def _unnamed(self, inode: Inode, parent: int) -> None:
        """``inode`` lost a name in directory ``parent``."""
        if inode.dir is not None:
            return
        more = self.more_parents.get(inode.ino)
        if inode.parent == parent:
            inode.parent = more.pop() if more else 0
        elif more and parent in more:
            more.remove(parent)
        if more is not None and not more:
            del self.more_parents[inode.ino]

    def rebuild_parents(self) -> None:
        """Every non-directory's parents from the directory entries (on load)."""
        self.more_parents = more = {}
        inodes = self.inodes
        dirs = []
        for inode in inodes.values():
            if inode.dir is None:
                inode.parent = 0
            else:
                dirs.append(inode)
        for d in dirs:
            assert d.dir is not None
            for child in d.dir.children():
                inode = inodes.get(child)
                if inode is None or inode.is_dir:
                    continue
                if not inode.parent:
                    inode.parent = d.ino
                else:
                    more.setdefault(inode.ino, []).append(d.ino)

    def check_growth(self, ino: int, size: int, now: int) -> None:
        """Raise QUOTA if file ``ino`` growing to ``size`` bytes would take a
        quota it is under over a limit in force (before its chunk is allocated)."""
        inode = self.get_file(ino)
        grow = size - inode.size
        if grow > 0 and self.quotas:
            deltas: quotas.Deltas = {}
            quotas.add(deltas, quotas.inode_quotas(self, inode), grow, 0)
            quotas.check(self, deltas, now)

    def nearest_quota(self, ino: int) -> Quota | None:
        """The quota of directory ``ino`` or of its nearest ancestor that has one
        (for a non-directory: of its first name's directory)."""
        inode = self.inodes.get(ino)
        if inode is None or not self.quotas:
            return None
        if inode.dir is None:
            if not inode.parent:
                return None
            ino = inode.parent
        found = quotas.quota_dirs(self, ino)
        return self.quotas[found[0]] if found else None

    def _unname_deltas(self, inode: Inode, parent: int) -> quotas.Deltas:
        """What removing ``inode``'s name in ``parent`` gives back to the quotas."""
        deltas: quotas.Deltas = {}
        if self.quotas:
            before = quotas.inode_quotas(self, inode)
            after: set[int] = set()
            if inode.dir is None:
                ps = self.parents_of(inode)
                ps.remove(parent)
                after = quotas.inode_quotas(self, inode, reparent={inode.ino: ps})
            quotas.add(deltas, before - after, -quotas.size_of(inode), -1)
        return deltas

    def take_garbage(self) -> set[int]:
        out, self.garbage = self.garbage, set()
        return out

    # ------------------------------------------------------------ mutations

    def apply(self, rec: Record) -> int | None:
        """Validate and apply one record; returns the inode it made or changed."""
        fn = getattr(self, "_op_" + str(rec.get("op")), None)
        if fn is None:
            raise GFSError(Code.INTERNAL, f"unknown op record {rec.get('op')!r}")
        result = fn(rec)
        rid = rec.get("rid")
        if rid is not None:
            self.rids[rid] = result
            if len(self.rids) > RID_KEEP:
                del self.rids[next(iter(self.rids))]
        return result

    def _op_epoch(self, rec: Record) -> None:
        if rec["epoch"] <= self.epoch:
            raise GFSError(Code.STALE, f"epoch {rec['epoch']} is not after {self.epoch}")
        self.epoch, self.primary = rec["epoch"], rec["primary"]

    def _op_init(self, rec: Record) -> int:
        root = self.inodes[ROOT_INO]
        root.atime_ns = root.mtime_ns = root.ctime_ns = rec["now"]
        return ROOT_INO

    def _new_inode(self, rec: Record, parent: Inode, mode: int, nlink: int, **kw: Any) -> Inode:
        """Checks shared by create/mkdir/symlink; then the new inode, linked in."""
        assert parent.dir is not None
        name = check_name(rec["name"])
        if name in parent.dir:
            raise GFSError(Code.EEXIST, f"{name!r} exists")
        ino, now = rec["ino"], rec["now"]
        if ino in self.inodes:
            raise GFSError(Code.INTERNAL, f"inode {ino} already in use")
        charged: quotas.Deltas = {}
        if self.quotas:
            quotas.add(charged, quotas.quota_dirs(self, parent.ino), 0, 1)
            quotas.check(self, charged, now)
        gid = rec["gid"]
        if parent.mode & stat.S_ISGID and not stat.S_ISLNK(mode):
            gid = parent.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        inode = Inode(ino, mode, rec["uid"], gid, nlink, now, now, now,
                      goal=parent.goal, **kw)
        self.inodes[ino] = inode
        parent.dir.add(name, ino)
        self._named(inode, parent.ino)
        quotas.charge(self, charged, now)
        parent.touch(now)
        self.next_ino = max(self.next_ino, ino + 1)
        return inode

    def _op_create(self, rec: Record) -> int:
        parent = self.get_dir(rec["parent"])
        mode = rec["mode"]
        fmt = stat.S_IFMT(mode) or stat.S_IFREG
        if fmt not in FILE_TYPES:
            raise GFSError(Code.EINVAL, f"create cannot make mode {oct(mode)}")
        chunks: dict[int, int] | None = {} if fmt == stat.S_IFREG else None
        return self._new_inode(rec, parent, fmt | (mode & 0o7777), 1, chunks=chunks,
                               rdev=rec.get("rdev", 0)).ino

    def _op_mkdir(self, rec: Record) -> int:
        parent = self.get_dir(rec["parent"])
        if parent.nlink >= MAX_LINKS:
            raise GFSError(Code.EMLINK, "too many subdirectories")
        inode = self._new_inode(rec, parent, stat.S_IFDIR | (rec["mode"] & 0o7777), 2,
                                dir=Directory(parent.ino))
        parent.nlink += 1
        return inode.ino

    def _op_symlink(self, rec: Record) -> int:
        parent = self.get_dir(rec["parent"])
        target = rec["target"]
        if not target:
            raise GFSError(Code.ENOENT, "empty symlink target")
        if len(target) > MAX_SYMLINK or b"\0" in target:
            raise GFSError(Code.ENAMETOOLONG if len(target) > MAX_SYMLINK else "EINVAL",
                           "bad symlink target")
        return self._new_inode(rec, parent, stat.S_IFLNK | 0o777, 1, target=target,
                               size=len(target)).ino

    def _op_link(self, rec: Record) -> int:
        inode = self.get(rec["ino"])
        parent = self.get_dir(rec["parent"])
        assert parent.dir is not None
        name = check_name(rec["name"])
        if inode.is_dir:
            raise GFSError(Code.EPERM, "hard link to a directory")
        if name in parent.dir:
            raise GFSError(Code.EEXIST, f"{name!r} exists")
        if inode.nlink >= MAX_LINKS:
            raise GFSError(Code.EMLINK, "too many links")
        charged: quotas.Deltas = {}
        if self.quotas:
            new = set(quotas.quota_dirs(self, parent.ino)) - quotas.inode_quotas(self, inode)
            quotas.add(charged, new, quotas.size_of(inode), 1)
            quotas.check(self, charged, rec["now"])
        inode.nlink += 1
        inode.ctime_ns = rec["now"]
        parent.dir.add(name, inode.ino)
        self._named(inode, parent.ino)
        quotas.charge(self, charged, rec["now"])
        parent.touch(rec["now"])
        return inode.ino

    def _op_unlink(self, rec: Record) -> None:
        parent = self.get_dir(rec["parent"])
        victim = self.lookup(parent.ino, check_name(rec["name"]))
        if victim.is_dir:
            raise GFSError(Code.EISDIR, f"{rec['name']!r} is a directory")
        assert parent.dir is not None
        charged = self._unname_deltas(victim, parent.ino)
        parent.dir.remove(rec["name"])
        self._unnamed(victim, parent.ino)
        quotas.charge(self, charged, rec["now"])
        parent.touch(rec["now"])
        self._unlink_inode(victim, rec["now"], parent.ino, rec["name"])

    def _op_rmdir(self, rec: Record) -> None:
        parent = self.get_dir(rec["parent"])
        victim = self.lookup(parent.ino, check_name(rec["name"]))
        if victim.dir is None:
            raise GFSError(Code.ENOTDIR, f"{rec['name']!r} is not a directory")
        if victim.dir.count:
            raise GFSError(Code.ENOTEMPTY, f"{rec['name']!r} is not empty")
        assert parent.dir is not None
        charged = self._unname_deltas(victim, parent.ino)
        parent.dir.remove(rec["name"])
        quotas.charge(self, charged, rec["now"])
        parent.nlink -= 1
        parent.touch(rec["now"])
        self._drop(victim)

    def _unlink_inode(self, inode: Inode, now: int, parent: int = 0, name: bytes = b"") -> None:
        inode.nlink -= 1
        inode.ctime_ns = now
        if inode.nlink <= 0:
            if inode.chunks is not None:
                self.trash[inode.ino] = [now, parent, name]
            else:
                self._drop(inode)

    def expired_trash(self, before_ns: int) -> list[int]:
        """Trashed inodes deleted before ``before_ns``."""
        return [ino for ino, (when, _, _) in self.trash.items() if when < before_ns]

    def _op_purge(self, rec: Record) -> None:
        """Drop trashed inodes for good; their chunks become garbage."""
        for ino in rec["inos"]:
            if self.trash.pop(ino, None) is not None:
                self._drop(self.inodes[ino])

    def _drop(self, inode: Inode) -> None:
        del self.inodes[inode.ino]
        self.quotas.pop(inode.ino, None)            # a removed directory's quota goes
        self.more_parents.pop(inode.ino, None)
        for handle in inode.chunk_handles():
            self._unref(handle)

    def _new_chunk(self, handle: int, version: int) -> None:
        """A chunk that one file references; handles are never reused."""
        self.chunks.new(handle, version)
        self.next_handle = max(self.next_handle, handle + 1)

    def _unref(self, handle: int) -> None:
        if self.chunks.unref(handle):
            self.garbage.add(handle)

    def _op_rename(self, rec: Record) -> None:
        flags = rec.get("flags", 0)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == (RENAME_NOREPLACE
                                                                       | RENAME_EXCHANGE):
            raise GFSError(Code.EINVAL, f"bad rename flags {flags}")
        sp, dp = self.get_dir(rec["parent"]), self.get_dir(rec["new_parent"])
        sname, dname = check_name(rec["name"]), check_name(rec["new_name"])
        assert sp.dir is not None and dp.dir is not None
        src = self.lookup(sp.ino, sname)
        dst_ino = dp.dir.get(dname)
        if flags & RENAME_EXCHANGE:
            if dst_ino is None:
                raise GFSError(Code.ENOENT, f"no entry {dname!r}")
            return self._exchange(rec, sp, src, dp, self.inodes[dst_ino])
        if dst_ino is not None and flags & RENAME_NOREPLACE:
            raise GFSError(Code.EEXIST, f"{dname!r} exists")
        if dst_ino == src.ino:
            return None          # two names of one inode: POSIX says do nothing
        if src.is_dir and self.is_ancestor(src.ino, dp.ino):
            raise GFSError(Code.EINVAL, "cannot move a directory into itself")
        dst = None if dst_ino is None else self.inodes[dst_ino]
        if dst is not None and src.is_dir:
            if dst.dir is None:
                raise GFSError(Code.ENOTDIR, f"{dname!r} is not a directory")
            if dst.dir.count:
                raise GFSError(Code.ENOTEMPTY, f"{dname!r} is not empty")
        elif dst is not None and dst.is_dir:
            raise GFSError(Code.EISDIR, f"{dname!r} is a directory")
        if src.is_dir and dst is None and sp is not dp and dp.nlink >= MAX_LINKS:
            raise GFSError(Code.EMLINK, "too many subdirectories")
        now = rec["now"]
        charged: quotas.Deltas = {}
        if self.quotas:
            if dst is not None:
                for q, (db, di) in self._unname_deltas(dst, dp.ino).items():
                    quotas.add(charged, (q,), db, di)
            quotas.move_deltas(self, [(src, sp.ino, dp.ino)], charged)
            quotas.check(self, charged, now)
        # checks done: mutate
        if dst is not None:
            dp.dir.remove(dname)
            self._unnamed(dst, dp.ino)
            if dst.is_dir:
                dp.nlink -= 1
                self._drop(dst)
            else:
                self._unlink_inode(dst, now, dp.ino, dname)
        sp.dir.remove(sname)
        dp.dir.add(dname, src.ino)
        self._unnamed(src, sp.ino)
        self._named(src, dp.ino)
        if src.dir is not None and sp is not dp:
            sp.nlink -= 1
            dp.nlink += 1
            src.dir.parent = dp.ino
        quotas.charge(self, charged, now)
        src.ctime_ns = now
        sp.touch(now)
        dp.touch(now)
        return None

    def _exchange(self, rec: Record, sp: Inode, src: Inode, dp: Inode, dst: Inode) -> None:
        assert sp.dir is not None and dp.dir is not None
        if src.ino == dst.ino:
            return
        if sp is not dp:
            if src.is_dir and self.is_ancestor(src.ino, dp.ino):
                raise GFSError(Code.EINVAL, "cannot move a directory into itself")
            if dst.is_dir and self.is_ancestor(dst.ino, sp.ino):
                raise GFSError(Code.EINVAL, "cannot move a directory into itself")
        now = rec["now"]
        charged: quotas.Deltas = {}
        if sp is not dp and self.quotas:
            quotas.move_deltas(self, [(src, sp.ino, dp.ino), (dst, dp.ino, sp.ino)], charged)
            quotas.check(self, charged, now)
        sp.dir.retarget(rec["name"], dst.ino)
        dp.dir.retarget(rec["new_name"], src.ino)
        if sp is not dp:
            for moved, old, new in ((src, sp, dp), (dst, dp, sp)):
                self._unnamed(moved, old.ino)
                self._named(moved, new.ino)
                if moved.dir is not None:
                    moved.dir.parent = new.ino
                    old.nlink -= 1
                    new.nlink += 1
        quotas.charge(self, charged, now)
        src.ctime_ns = dst.ctime_ns = now
        sp.touch(now)
        dp.touch(now)

    def _op_setattr(self, rec: Record) -> int:
        inode = self.get(rec["ino"])
        size = rec.get("size")
        if size is not None:
            if inode.chunks is None:
                raise GFSError(Code.EISDIR if inode.is_dir else "EINVAL", "not a regular file")
            if size < 0:
                raise GFSError(Code.EINVAL, "negative size")
            if size > MAX_FILE_SIZE:
                raise GFSError(Code.EFBIG, f"size over {MAX_FILE_SIZE}")
        now = rec["now"]
        charged: quotas.Deltas = {}
        if size is not None and size != inode.size and self.quotas:
            quotas.add(charged, quotas.inode_quotas(self, inode), size - inode.size, 0)
            quotas.check(self, charged, now)
        if "mode" in rec:
            inode.mode = stat.S_IFMT(inode.mode) | (rec["mode"] & 0o7777)
        if "uid" in rec:
            inode.uid = rec["uid"]
        if "gid" in rec:
            inode.gid = rec["gid"]
        if size is not None:
            self._truncate(inode, size)
            inode.mtime_ns = now
            quotas.charge(self, charged, now)
        if "atime_ns" in rec:
            inode.atime_ns = rec["atime_ns"]
        if "mtime_ns" in rec:
            inode.mtime_ns = rec["mtime_ns"]
        inode.ctime_ns = now
        return inode.ino

    def _truncate(self, inode: Inode, size: int) -> None:
        """Drop the chunks wholly beyond ``size``; the client cuts a partial one."""
        assert inode.chunks is not None
        if size < inode.size:
            keep = -(-size // self.chunk_size)          # chunks 0..keep-1 stay
            for index in [i for i in inode.chunks if i >= keep]:
                self._unref(inode.chunks.pop(index))
        inode.size = size

    def _op_setxattr(self, rec: Record) -> int:
        inode = self.get(rec["ino"])
        name, value, flags = rec["name"], rec["value"], rec.get("flags", 0)
        if not name or len(name) > MAX_XATTR_NAME or len(value) > MAX_XATTR_VALUE:
            raise GFSError(Code.ERANGE, "xattr name or value too long")
        if flags & XATTR_CREATE and name in inode.xattrs:
            raise GFSError(Code.EEXIST, f"xattr {name!r} exists")
        if flags & XATTR_REPLACE and name not in inode.xattrs:
            raise GFSError(Code.ENODATA, f"no xattr {name!r}")
        inode.set_xattr(name, value)
        inode.ctime_ns = rec["now"]
        return inode.ino

    def _op_removexattr(self, rec: Record) -> int:
        inode = self.get(rec["ino"])
        if rec["name"] not in inode.xattrs:
            raise GFSError(Code.ENODATA, f"no xattr {rec['name']!r}")
        inode.remove_xattr(rec["name"])
        inode.ctime_ns = rec["now"]
        return inode.ino

    def _op_add_chunk(self, rec: Record) -> int:
        """A new chunk at ``index`` of file ``ino`` (allocated for a lease)."""
        inode = self.get_file(rec["ino"])
        assert inode.chunks is not None
        index, handle = rec["index"], rec["handle"]
        if index in inode.chunks:
            raise GFSError(Code.EEXIST, f"chunk {index} of {inode.ino} exists")
        if handle in self.chunks:
            raise GFSError(Code.INTERNAL, f"chunk handle {handle} in use")
        inode.chunks[index] = handle
        self._new_chunk(handle, rec["version"])
        return inode.ino

    def _op_drop_chunk(self, rec: Record) -> None:
        """Undo an allocation no chunkd accepted."""
        inode = self.inodes.get(rec["ino"])
        if inode is not None and inode.chunks and inode.chunks.get(rec["index"]) == rec["handle"]:
            del inode.chunks[rec["index"]]
            self._unref(rec["handle"])

    def _op_set_version(self, rec: Record) -> None:
        if rec["handle"] not in self.chunks:
            raise GFSError(Code.NOCHUNK, f"no chunk {rec['handle']}")
        self.chunks.set_version(rec["handle"], rec["version"])

    def _op_extend(self, rec: Record) -> int:
        inode = self.get_file(rec["ino"])
        if rec["size"] > MAX_FILE_SIZE or rec["size"] < 0:
            raise GFSError(Code.EFBIG if rec["size"] > 0 else "EINVAL", "bad size")
        charged: quotas.Deltas = {}
        if rec["size"] > inode.size and self.quotas:
            quotas.add(charged, quotas.inode_quotas(self, inode), rec["size"] - inode.size, 0)
            quotas.check(self, charged, rec["now"])
        inode.size = max(inode.size, rec["size"])
        quotas.charge(self, charged, rec["now"])
        inode.mtime_ns = rec["mtime_ns"]
        inode.ctime_ns = rec["now"]
        return inode.ino

    def _op_setgoal(self, rec: Record) -> int:
        """Replication goal of ``ino`` (and, if ``recursive``, of everything below
        it). Directories pass their goal on to new children."""
        inode = self.get(rec["ino"])
        goal = rec["goal"]
        if not 1 <= goal <= MAX_GOAL:
            raise GFSError(Code.EINVAL, f"goal must be 1..{MAX_GOAL}, got {goal}")
        targets = self.subtree(inode.ino) if rec.get("recursive") else [inode]
        for target in targets:
            if target.goal != goal:
                target.goal = goal
                target.ctime_ns = rec["now"]
        return inode.ino

    # ------------------------------------------------------------ snapshots (GFS §3.4)

    def snapshot_order(self, src: int) -> list[Inode]:
        """The inodes a snapshot of ``src`` copies, in the order they get their
        new inode numbers: ``src`` first, then every inode below it, each once
        (hard links), directory entries in cookie order. Deterministic, so a
        replayed record numbers them the same way."""
        root = self.get(src)
        order, seen, stack = [root], {root.ino}, [root]
        while stack:
            inode = stack.pop()
            if inode.dir is None:
                continue
            for _name, child_ino in inode.dir.items():
                child = self.inodes[child_ino]
                if child.ino in seen:
                    continue
                seen.add(child.ino)
                order.append(child)
                if child.dir is not None:
                    stack.append(child)
        return order

    def _op_snapshot(self, rec: Record) -> int:
        """Copy ``src`` (a file or a whole tree) to ``name`` in ``parent``:
        metadata only, the copies share the chunks (reference counts raised).
        New inode numbers are ``ino`` .. ``ino + count - 1`` in
        :meth:`snapshot_order`."""
        src = self.get(rec["src"])
        parent = self.get_dir(rec["parent"])
        assert parent.dir is not None
        name = check_name(rec["name"])
        if name in parent.dir:
            raise GFSError(Code.EEXIST, f"{name!r} exists")
        if src.dir is not None and self.is_ancestor(src.ino, parent.ino):
            raise GFSError(Code.EINVAL, "cannot snapshot a directory into itself")
        if src.dir is not None and parent.nlink >= MAX_LINKS:
            raise GFSError(Code.EMLINK, "too many subdirectories")
        order = self.snapshot_order(src.ino)
        first, count = rec["ino"], rec["count"]
        if count != len(order):
            raise GFSError(Code.INTERNAL, f"snapshot of {src.ino}: {len(order)} inodes, "
                                       f"record says {count}")
        if any(first + k in self.inodes for k in range(count)):
            raise GFSError(Code.INTERNAL, f"inode numbers {first}..{first + count - 1} in use")
        new = {old.ino: first + k for k, old in enumerate(order)}
        links: dict[int, int] = {}            # names each copied non-directory gets
        for old in order:
            if old.dir is not None:
                for child in old.dir.children():
                    links[child] = links.get(child, 0) + 1
        now = rec["now"]
        charged: quotas.Deltas = {}
        if self.quotas:
            quotas.add(charged, quotas.quota_dirs(self, parent.ino),
                       sum(quotas.size_of(old) for old in order), count)
            quotas.check(self, charged, now)
        # checks done: mutate
        for old in order:
            nlink = old.nlink if old.dir is not None else (1 if old is src else links[old.ino])
            copy = Inode(new[old.ino], old.mode, old.uid, old.gid, nlink, old.atime_ns,
                         old.mtime_ns, now, size=old.size, rdev=old.rdev, goal=old.goal,
                         xattrs=old.xattrs, target=old.target)
            if old.dir is not None:
                d = Directory(parent.ino if old is src else new[old.dir.parent])
                for child_name, child_ino in old.dir.items():
                    d.add(child_name, new[child_ino])
                copy.dir = d
            elif old.chunks is not None:
                copy.chunks = old.chunks.copy()
                for handle in old.chunk_handles():
                    self.chunks.ref(handle)
            self.inodes[copy.ino] = copy
        parent.dir.add(name, first)
        self._named(self.inodes[first], parent.ino)
        for old in order:                   # the copies' names' directories
            if old.dir is not None:
                for child in old.dir.children():
                    self._named(self.inodes[new[child]], new[old.ino])
        quotas.charge(self, charged, now)
        if src.dir is not None:
            parent.nlink += 1
        parent.touch(now)
        self.next_ino = max(self.next_ino, first + count)
        return first

    def _op_set_versions(self, rec: Record) -> None:
        """Many ``set_version`` at once (a snapshot revoking a tree's leases);
        chunks deleted meanwhile are skipped, versions never go down."""
        for handle, version in rec["versions"]:
            current = self.chunks.version(handle)
            if current is not None and current < version:
                self.chunks.set_version(handle, version)

    def _op_reserve_handles(self, rec: Record) -> None:
        """Chunk handles below ``next_handle`` are taken (a copy-on-write copies
        the chunk to a new handle before its ``cow`` record is logged)."""
        self.next_handle = max(self.next_handle, rec["next_handle"])

    def _op_cow(self, rec: Record) -> int:
        """Copy-on-write of a shared chunk: chunk ``index`` of ``ino`` is now
        ``new`` (a copy of ``old`` at ``version``, made by each replica's
        chunkd); ``old`` loses one reference."""
        inode = self.get_file(rec["ino"])
        assert inode.chunks is not None
        index, old, new = rec["index"], rec["old"], rec["new"]
        if inode.chunks.get(index) != old:
            raise GFSError(Code.EAGAIN, f"chunk {index} of inode {inode.ino} changed meanwhile")
        if new in self.chunks:
            raise GFSError(Code.INTERNAL, f"chunk handle {new} in use")
        inode.chunks[index] = new
        self._new_chunk(new, rec["version"])
        self._unref(old)
        return inode.ino

    # ------------------------------------------------------------ trash

    def _op_restore(self, rec: Record) -> int:
        """Give a trashed file a name again (``gfs trash restore``)."""
        ino = rec["ino"]
        if ino not in self.trash:
            raise GFSError(Code.ENOENT, f"inode {ino} is not in the trash")
        parent = self.get_dir(rec["parent"])
        assert parent.dir is not None
        name = check_name(rec["name"])
        if name in parent.dir:
            raise GFSError(Code.EEXIST, f"{name!r} exists")
        inode = self.inodes[ino]
        charged: quotas.Deltas = {}
        if self.quotas:
            quotas.add(charged, quotas.quota_dirs(self, parent.ino), quotas.size_of(inode), 1)
            quotas.check(self, charged, rec["now"])
        del self.trash[ino]
        inode.nlink = 1
        inode.ctime_ns = rec["now"]
        parent.dir.add(name, ino)
        self._named(inode, parent.ino)
        quotas.charge(self, charged, rec["now"])
        parent.touch(rec["now"])
        return ino

    # ------------------------------------------------------------ quotas

    def _op_setquota(self, rec: Record) -> int:
        """Set (or replace) the quota of directory ``ino`` (master.state.quota)."""
        inode = self.get_dir(rec["ino"])
        limits = {k: rec.get(k, 0) for k in quotas.LIMITS}
        grace = rec.get("grace_ns", quotas.DEFAULT_GRACE_NS)
        for key, value in (*limits.items(), ("grace_ns", grace)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
                raise GFSError(Code.EINVAL, f"quota {key} must be 0..2**63-1")
        if not any(limits.values()):
            raise GFSError(Code.EINVAL, "a quota needs at least one limit")
        for kind in ("bytes", "inodes"):
            hard, soft = limits[kind], limits["soft_" + kind]
            if hard and soft > hard:
                raise GFSError(Code.EINVAL, f"soft {kind} limit {soft} over the hard {hard}")
        q = Quota(inode.ino, **limits, grace_ns=grace)
        old = self.quotas.get(inode.ino)
        if old is not None:
            q.used_bytes, q.used_inodes = old.used_bytes, old.used_inodes
            q.since_bytes, q.since_inodes = old.since_bytes, old.since_inodes
        else:
            q.used_bytes, q.used_inodes = quotas.usage(self, inode.ino)
        quotas.note_soft(q, rec["now"])
        self.quotas[inode.ino] = q
        return inode.ino

    def _op_rmquota(self, rec: Record) -> int:
        """Remove the quota of directory ``ino``."""
        if self.quotas.pop(rec["ino"], None) is None:
            raise GFSError(Code.ENOENT, f"no quota on inode {rec['ino']}")
        return rec["ino"]
