"""pyfuse3 ``Operations``: POSIX calls translated to :class:`gfsfs.client.core.Client`.

This is the one errno boundary of the driver: every handler is wrapped by
:func:`errno_boundary`, which turns a :class:`GFSError` into
``FUSEError(err.errno)``, an ``OSError`` into ``FUSEError(errno)`` and anything
else into a logged ``FUSEError(EIO)`` (pyfuse3 lets handlers raise nothing but
``FUSEError``).

Translation only: what a call means for the file system -- permission checks
(access(2)), the O_CREAT race, O_TRUNC on open, O_APPEND writes as record
appends -- is the client library's (:class:`~gfsfs.client.core.Client`,
:mod:`gfsfs.client.perms`). What is left here is the kernel's side: entry
attributes and timeouts, the caller's groups, the umask, readdir cookies,
file handles, read-only mounts, and :data:`RENAME_FLAGS`.

Inode numbers are the master's; the kernel's lookup counts need no table here
(``forget`` only drops client caches). ``fh`` of an open file is a counter
mapping to an :class:`~gfsfs.client.core.OpenFile`; ``fh`` of a directory is its
inode (readdir is stateless: the master's offsets are cookies).
"""
from __future__ import annotations

import bisect
import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3
from pyfuse3 import EntryAttributes, FileInfo, FUSEError, RequestContext

from gfsfs.client.core import Attr, Client, Ctx, OpenFile
from gfsfs.common.config import ClientConfig
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import MAX_NAME, RENAME_EXCHANGE, RENAME_NOREPLACE

log = logging.getLogger(__name__)

BLKSIZE = 1 << 20          # st_blksize: the I/O size we like (cp etc. use it)
STATFS_FRSIZE = 64 * 1024  # f_frsize: the CRC block size
DOT_COOKIES = 2            # readdir cookies 1 and 2 are '.' and '..'
READDIR_BATCH = 512        # entries asked of the master at once

# pyfuse3's rename flags -> the client's (the master's wire values): the one place
RENAME_FLAGS = {pyfuse3.RENAME_NOREPLACE: RENAME_NOREPLACE,
                pyfuse3.RENAME_EXCHANGE: RENAME_EXCHANGE}

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def errno_boundary(fn: F) -> F:
    """Map every exception of a handler to ``FUSEError`` (the only place)."""
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except FUSEError:
            raise
        except GFSError as exc:
            if exc.code in (Code.INTERNAL, Code.EIO, Code.CORRUPT, Code.UNAVAILABLE,
                            Code.BADREQ, Code.NOROUTE):
                log.error("%s: %s", fn.__name__, exc)
            else:
                log.debug("%s: %s", fn.__name__, exc)
            raise FUSEError(exc.errno) from None
        except OSError as exc:
            log.debug("%s: %s", fn.__name__, exc)
            raise FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed unexpectedly", fn.__name__)
            raise FUSEError(errno.EIO) from None
    return wrapper  # type: ignore[return-value]


def rename_flags(flags: int) -> int:
    """The client's rename flags for FUSE's; EINVAL for any it has no name for."""
    ours = 0
    for fuse_flag, flag in RENAME_FLAGS.items():
        if flags & fuse_flag:
            ours |= flag
            flags &= ~fuse_flag
    if flags:
        raise FUSEError(errno.EINVAL)
    return ours


def masked(mode: int, ctx: RequestContext) -> int:
    """The permission bits of ``mode`` less the caller's umask."""
    return mode & ~ctx.umask & 0o7777


def to_fuse_errno(exc: BaseException) -> int:
    """What :func:`errno_boundary` would answer for ``exc`` (for tests/tools)."""
    if isinstance(exc, FUSEError):
        return exc.errno
    if isinstance(exc, GFSError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO


def quota_statfs(st: pyfuse3.StatvfsData, q: dict[str, Any] | None) -> None:
    """``df`` on a mount whose root is under a quota (docs/quotas.md): its
    limits as the size (the hard one, else the soft one), what is left of
    them as free, never more than the cluster has free."""
    if not q:
        return
    limit = int(q.get("bytes") or q.get("soft_bytes") or 0)
    if limit:
        used = int(q.get("used_bytes", 0))
        st.f_blocks = -(-limit // STATFS_FRSIZE)
        st.f_bfree = min(st.f_bfree, max(0, limit - used) // STATFS_FRSIZE)
        st.f_bavail = st.f_bfree
    limit = int(q.get("inodes") or q.get("soft_inodes") or 0)
    if limit:
        st.f_files = limit
        st.f_ffree = st.f_favail = max(0, limit - int(q.get("used_inodes", 0)))


class DirListing:
    """One opendir's batch of master entries, kept until releasedir: the kernel
    asks for a few dozen entries per READDIRPLUS, and each of those would
    otherwise be a master RPC. A listing is a snapshot as of its fetch (POSIX
    lets readdir miss entries added after opendir)."""

    def __init__(self, ino: int) -> None:
        self.ino = ino
        self.base = 0                                        # master offset it starts after
        self.entries: list[tuple[bytes, Attr, int]] = []     # (name, attr, cookie), ascending
        self.complete = False

    def keep(self, base: int, entries: list[tuple[bytes, Attr, int]], complete: bool) -> None:
        self.base, self.entries, self.complete = base, entries, complete

    def after(self, offset: int) -> list[tuple[bytes, Attr, int]] | None:
        """Entries past master offset ``offset``, or None when they must be fetched."""
        if not self.entries or offset < self.base:
            return None
        if offset >= self.entries[-1][2]:
            return [] if self.complete else None
        i = bisect.bisect_right([e[2] for e in self.entries], offset)
        return self.entries[i:]


class Operations(pyfuse3.Operations):
    enable_writeback_cache = False     # write-through: other clients see data on close
    supports_dot_lookup = True

    def __init__(self, client: Client, cfg: ClientConfig, read_only: bool = False) -> None:
        super().__init__()
        self.client = client
        self.cfg = cfg
        self.read_only = read_only
        self.files: dict[int, OpenFile] = {}
        self.next_fh = 1
        self.dirs: dict[int, DirListing] = {}
        self.next_dir_fh = 1
        self._groups: dict[int, tuple[float, frozenset[int]]] = {}

    # ------------------------------------------------------------ helpers

    def entry(self, attr: Attr) -> EntryAttributes:
        e = EntryAttributes()
        e.st_ino = attr["ino"]
        e.generation = 0
        e.entry_timeout = self.cfg.entry_timeout
        e.attr_timeout = self.cfg.attr_timeout
        e.st_mode = attr["mode"]
        e.st_nlink = attr["nlink"]
        e.st_uid = attr["uid"]
        e.st_gid = attr["gid"]
        e.st_rdev = attr.get("rdev", 0)
        e.st_size = attr["size"]
        e.st_blksize = BLKSIZE
        e.st_blocks = attr.get("blocks", (attr["size"] + 511) // 512)
        e.st_atime_ns = attr["atime_ns"]
        e.st_mtime_ns = attr["mtime_ns"]
        e.st_ctime_ns = attr["ctime_ns"]
        return e

    def ctx(self, ctx: RequestContext | None) -> Ctx | None:
        """The caller for the master: uid, gid and supplementary groups."""
        if ctx is None:
            return None
        # the supplementary groups of the pid are cached for a second (read from
        # /proc); the request's own gid is added to every request, never cached
        now = time.monotonic()
        cached = self._groups.get(ctx.pid)
        if cached and cached[0] > now:
            sup = cached[1]
        else:
            sup = frozenset()
            if ctx.pid:
                try:
                    sup = frozenset(pyfuse3.get_sup_groups(ctx.pid))
                except (OSError, ValueError):
                    pass
                if len(self._groups) > 1024:
                    self._groups.clear()
                self._groups[ctx.pid] = (now + 1.0, sup)
        gids = sorted(sup | {ctx.gid})
        return {"uid": ctx.uid, "gid": ctx.gid, "gids": gids}

    def _writable(self) -> None:
        if self.read_only:
            raise FUSEError(errno.EROFS)

    @staticmethod
    def _name(name: bytes) -> bytes:
        if len(name) > MAX_NAME:
            raise FUSEError(errno.ENAMETOOLONG)
        return name

    def _file(self, fh: int) -> OpenFile:
        of = self.files.get(fh)
        if of is None:
            raise FUSEError(errno.EBADF)
        return of

    # ------------------------------------------------------------ attributes

    @errno_boundary
    async def lookup(self, parent_inode: int, name: bytes, ctx: RequestContext) -> EntryAttributes:
        if name == b".":
            return self.entry(await self.client.getattr(parent_inode))
        return self.entry(await self.client.lookup(parent_inode, self._name(name), self.ctx(ctx)))

    @errno_boundary
    async def getattr(self, inode: int, ctx: RequestContext) -> EntryAttributes:
        return self.entry(await self.client.getattr(inode))

    @errno_boundary
    async def setattr(self, inode: int, attr: EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: RequestContext) -> EntryAttributes:
        self._writable()
        changes: dict[str, Any] = {}
        if fields.update_mode:
            changes["mode"] = attr.st_mode
        if fields.update_uid:
            changes["uid"] = attr.st_uid
        if fields.update_gid:
            changes["gid"] = attr.st_gid
        if fields.update_atime:
            changes["atime_ns"] = attr.st_atime_ns
        if fields.update_mtime:
            changes["mtime_ns"] = attr.st_mtime_ns
        if fields.update_size:
            changes["size"] = attr.st_size
            of = self.files.get(fh) if fh is not None else None
            if of is not None and of.writable:
                changes["write_handle"] = True   # ftruncate: the open checked access
        if not changes:
            return self.entry(await self.client.getattr(inode))
        return self.entry(await self.client.setattr(inode, self.ctx(ctx), **changes))

    @errno_boundary
    async def access(self, inode: int, mode: int, ctx: RequestContext) -> bool:
        return await self.client.access(inode, mode, self.ctx(ctx))

    @errno_boundary
    async def readlink(self, inode: int, ctx: RequestContext) -> bytes:
        return await self.client.readlink(inode, self.ctx(ctx))

    def forget(self, inode_list: list[tuple[int, int]]) -> None:  # type: ignore[override]
        try:
            for ino, _ in inode_list:
                self.client.forget(ino)
        except Exception:  # forget may raise nothing at all
            log.exception("forget failed")

    # ------------------------------------------------------------ namespace

    @errno_boundary
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: RequestContext) -> EntryAttributes:
        self._writable()
        attr = await self.client.create(parent_inode, self._name(name),
                                        stat.S_IFMT(mode) | masked(mode, ctx),
                                        ctx.uid, ctx.gid, rdev, self.ctx(ctx))
        return self.entry(attr)

    @errno_boundary
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: RequestContext) -> EntryAttributes:
        self._writable()
        attr = await self.client.mkdir(parent_inode, self._name(name),
                                       stat.S_IFDIR | masked(mode, ctx),
                                       ctx.uid, ctx.gid, self.ctx(ctx))
        return self.entry(attr)

    @errno_boundary
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: RequestContext) -> EntryAttributes:
        self._writable()
        attr = await self.client.symlink(parent_inode, self._name(name), target,
                                         ctx.uid, ctx.gid, self.ctx(ctx))
        return self.entry(attr)

    @errno_boundary
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: RequestContext) -> EntryAttributes:
        self._writable()
        return self.entry(await self.client.link(inode, new_parent_inode, self._name(new_name),
                                                 self.ctx(ctx)))

    @errno_boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: RequestContext) -> None:
        self._writable()
        await self.client.unlink(parent_inode, name, self.ctx(ctx))

    @errno_boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: RequestContext) -> None:
        self._writable()
        await self.client.rmdir(parent_inode, name, self.ctx(ctx))

    @errno_boundary
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: RequestContext) -> None:
        self._writable()
        await self.client.rename(parent_inode_old, name_old, parent_inode_new,
                                 self._name(name_new), rename_flags(flags), self.ctx(ctx))

    # ------------------------------------------------------------ directories

    @errno_boundary
    async def opendir(self, inode: int, ctx: RequestContext) -> int:
        attr = await self.client.getattr(inode)
        if not stat.S_ISDIR(attr["mode"]):
            raise FUSEError(errno.ENOTDIR)
        fh = self.next_dir_fh
        self.next_dir_fh += 1
        self.dirs[fh] = DirListing(inode)
        return fh

    @errno_boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """Cookies: 1 after '.', 2 after '..', master offset + 2 after an entry."""
        listing = self.dirs.get(fh)
        if listing is None:
            raise FUSEError(errno.EBADF)
        ino = listing.ino
        if start_id < 1:
            attr = await self.client.getattr(ino)
            if not pyfuse3.readdir_reply(token, b".", self.entry(attr), 1):
                return
        if start_id < 2:
            try:
                parent = await self.client.lookup(ino, b"..")
            except GFSError:
                parent = await self.client.getattr(ino)
            if not pyfuse3.readdir_reply(token, b"..", self.entry(parent), 2):
                return
        offset = max(0, start_id - DOT_COOKIES)
        if start_id == 0:
            listing.entries = []                  # rewinddir: list afresh
        while True:
            entries = listing.after(offset)
            if entries is None:
                entries = await self.client.readdir(ino, offset, READDIR_BATCH)
                listing.keep(offset, entries, complete=len(entries) < READDIR_BATCH)
            if not entries:
                return
            for name, attr, next_offset in entries:
                if name in (b".", b".."):
                    continue
                if not pyfuse3.readdir_reply(token, name, self.entry(attr),
                                             next_offset + DOT_COOKIES):
                    return
            offset = entries[-1][2]

    @errno_boundary
    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    @errno_boundary
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None   # namespace changes are durable at the master when they return

    # ------------------------------------------------------------ files

    def _new_fh(self, of: OpenFile) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.files[fh] = of
        return fh

    @staticmethod
    def _file_info(fh: int, flags: int) -> FileInfo:
        """O_APPEND files bypass the page cache (direct_io): the kernel's
        offsets of their writes are ignored (see :meth:`write`), so the pages
        it would cache at those offsets could be wrong."""
        return FileInfo(fh=fh, keep_cache=False, direct_io=bool(flags & os.O_APPEND))

    @errno_boundary
    async def open(self, inode: int, flags: int, ctx: RequestContext) -> FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            self._writable()
        if flags & os.O_TRUNC:
            # libfuse3 turns on atomic_o_trunc: the kernel passes O_TRUNC here
            # instead of sending a setattr(size=0) first
            self._writable()
        fh = self._new_fh(await self.client.open_inode(inode, flags, self.ctx(ctx)))
        self._forget_kernel_attrs(inode)
        return self._file_info(fh, flags)

    @staticmethod
    def _forget_kernel_attrs(inode: int) -> None:
        """Close-to-open: the kernel does not ask for attributes on open and
        ends cached reads at its cached size, which another mount's close may
        have outdated. Invalidating them (attributes only: never blocks on
        pages) makes the next stat, and a read past the old size, ask us."""
        try:
            pyfuse3.invalidate_inode(inode, attr_only=True)
        except OSError as exc:       # ENOENT: the kernel holds no such inode
            log.debug("invalidate_inode(%d): %s", inode, exc)

    @errno_boundary
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: RequestContext) -> tuple[FileInfo, EntryAttributes]:
        self._writable()
        # without O_EXCL, a name made meanwhile elsewhere is opened instead
        attr = await self.client.create_open(parent_inode, self._name(name),
                                             stat.S_IFREG | masked(mode, ctx),
                                             ctx.uid, ctx.gid, flags, self.ctx(ctx))
        fh = self._new_fh(self.client.open_file(attr["ino"], flags, attr["size"]))
        return self._file_info(fh, flags), self.entry(attr)

    @errno_boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        of = self._file(fh)
        log.debug("read inode %d off %d len %d", of.ino, off, size)
        return await self.client.read(of.ino, off, size, of)

    @errno_boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._writable()
        of = self._file(fh)
        log.debug("write inode %d off %d len %d", of.ino, off, len(buf))
        if of.flags & os.O_APPEND:
            # a record append (GFS §3.3): the kernel's offset (from its cached size) is
            # ignored; queued in the client unless the file is open O_SYNC/O_DSYNC
            queued = not of.flags & (os.O_SYNC | os.O_DSYNC)
            return await self.client.append_records(of.ino, buf, queued)
        return await self.client.write(of.ino, off, buf)

    @errno_boundary
    async def fallocate(self, inode: int, mode: int, offset: int, length: int) -> None:
        """FALLOCATE (served through :mod:`gfsfs.fuse.ext`; pyfuse3 has no
        handler for it): allocate, keep-size, punch hole, zero range."""
        self._writable()
        log.debug("fallocate inode %d mode %#x off %d len %d", inode, mode, offset, length)
        await self.client.fallocate(inode, mode, offset, length)

    @errno_boundary
    async def flush(self, fh: int) -> None:
        of = self._file(fh)
        await self.client.flush(of.ino, of)

    @errno_boundary
    async def fsync(self, fh: int, datasync: bool) -> None:
        of = self._file(fh)
        await self.client.fsync(of.ino, of)

    @errno_boundary
    async def release(self, fh: int) -> None:
        of = self.files.pop(fh, None)
        if of is not None:
            await self.client.release(of)

    # ------------------------------------------------------------ statfs, xattrs

    @errno_boundary
    async def statfs(self, ctx: RequestContext) -> pyfuse3.StatvfsData:
        s = await self.client.statfs()
        st = pyfuse3.StatvfsData()
        st.f_bsize = BLKSIZE
        st.f_frsize = STATFS_FRSIZE
        st.f_blocks = int(s["total_bytes"]) // STATFS_FRSIZE
        st.f_bfree = int(s["free_bytes"]) // STATFS_FRSIZE
        st.f_bavail = st.f_bfree
        files = int(s.get("files", 0))
        st.f_files = files + (1 << 32)
        st.f_ffree = st.f_favail = 1 << 32
        st.f_namemax = MAX_NAME
        quota_statfs(st, s.get("quota"))
        return st

    @errno_boundary
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: RequestContext) -> None:
        self._writable()
        await self.client.setxattr(inode, name, value, 0, self.ctx(ctx))

    @errno_boundary
    async def getxattr(self, inode: int, name: bytes, ctx: RequestContext) -> bytes:
        return await self.client.getxattr(inode, name, self.ctx(ctx))

    @errno_boundary
    async def listxattr(self, inode: int, ctx: RequestContext) -> list[bytes]:
        return await self.client.listxattr(inode, self.ctx(ctx))

    @errno_boundary
    async def removexattr(self, inode: int, name: bytes, ctx: RequestContext) -> None:
        self._writable()
        await self.client.removexattr(inode, name, self.ctx(ctx))

