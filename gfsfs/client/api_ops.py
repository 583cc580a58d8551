"""The operations of the public client API (:mod:`gfsfs.client.api`) as async methods
on an open :class:`gfsfs.client.core.Client`, for trio programs; :class:`gfsfs.client.api.GFS`
runs each of them on its own trio thread.

Paths are POSIX paths from the root (:func:`gfsfs.client.paths.resolve`). Failures are
:class:`~gfsfs.common.errors.GFSError` (mapped to OSError by :func:`gfsfs.client.api.os_error`)
or, for too many symbolic links, ``OSError(ELOOP)``. The master is asked without
a caller context: like the admin CLI, the API is a trusted client (no
permission checks); what it creates belongs to ``uid``/``gid``.
"""
from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from typing import Any

from gfsfs.client import paths
from gfsfs.client.core import Attr, Client, OpenFile
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import RENAME_NOREPLACE

FILE_MODE = 0o644
DIR_MODE = 0o755


@dataclass(frozen=True)
class Stat:
    """One file's attributes as the master keeps them."""
    path: str                 # absolute POSIX path inside the file system
    ino: int
    mode: int                 # st_mode: type and permission bits
    size: int
    nlink: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    goal: int                 # replicas per chunk

    @property
    def name(self) -> str:
        return posixpath.basename(self.path) or "/"

    @property
    def type(self) -> str:
        """"file", "directory", "symlink" or "other"."""
        if stat.S_ISREG(self.mode):
            return "file"
        if stat.S_ISDIR(self.mode):
            return "directory"
        return "symlink" if stat.S_ISLNK(self.mode) else "other"

    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @classmethod
    def of(cls, path: str, attr: Attr) -> Stat:
        return cls(path, int(attr["ino"]), int(attr["mode"]), int(attr["size"]),
                   int(attr["nlink"]), int(attr["uid"]), int(attr["gid"]),
                   int(attr["atime_ns"]), int(attr["mtime_ns"]), int(attr["ctime_ns"]),
                   int(attr.get("goal", 0)))


@dataclass(frozen=True)
class Mode:
    """An ``open()`` mode string, parsed."""
    read: bool
    write: bool
    create: bool
    truncate: bool
    exclusive: bool
    append: bool
    text: bool

    @classmethod
    def parse(cls, mode: str) -> Mode:
        kinds = [c for c in mode if c in "rwax"]
        if len(kinds) != 1 or set(mode) - set("rwaxbt+") or len(set(mode)) != len(mode) \
                or ("b" in mode and "t" in mode):
            raise ValueError(f"invalid mode: {mode!r}")
        k, plus = kinds[0], "+" in mode
        return cls(read=k == "r" or plus, write=k != "r" or plus, create=k != "r",
                   truncate=k == "w", exclusive=k == "x", append=k == "a", text="b" not in mode)


class Ops:
    def __init__(self, client: Client, uid: int | None = None, gid: int | None = None) -> None:
        self.client = client
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid

    async def resolve(self, path: str, follow: bool = True) -> Attr:
        return await paths.resolve(self.client, paths.normalize(path), follow)

    async def parent(self, path: str) -> tuple[int, bytes]:
        """(inode of the directory ``path`` is in, its last name)."""
        parent, name = paths.split(path)
        attr = await self.resolve(parent)
        if not stat.S_ISDIR(attr["mode"]):
            raise GFSError(Code.ENOTDIR, f"{parent}: not a directory")
        return int(attr["ino"]), name

    async def stat(self, path: str, follow: bool = True) -> Stat:
        return Stat.of(paths.normalize(path), await self.resolve(path, follow))

    async def entries(self, ino: int) -> list[tuple[bytes, Attr]]:
        """Every entry of directory ``ino``, page by page."""
        out: list[tuple[bytes, Attr]] = []
        offset = 0
        while True:
            page = await self.client.readdir(ino, offset, 1024)
            if not page:
                return out
            out.extend((name, attr) for name, attr, _cookie in page)
            offset = page[-1][2]

    async def ls(self, path: str) -> list[Stat]:
        attr = await self.resolve(path)
        if not stat.S_ISDIR(attr["mode"]):
            raise GFSError(Code.ENOTDIR, f"{path}: not a directory")
        base = paths.normalize(path).rstrip("/")
        found = await self.entries(int(attr["ino"]))
        return sorted((Stat.of(f"{base}/{os.fsdecode(n)}", a) for n, a in found),
                      key=lambda s: s.path)

    async def statfs(self) -> dict[str, Any]:
        return dict(await self.client.statfs())

    # ------------------------------------------------------------ directories

    async def mkdir(self, path: str, mode: int = DIR_MODE, parents: bool = False,
                    exist_ok: bool = False) -> Stat:
        """Like ``Path.mkdir``: ``parents`` makes missing ancestors too;
        ``exist_ok``: an existing directory is no error."""
        full = paths.normalize(path)
        if full == "/":
            if exist_ok:
                return await self.stat(full)
            raise GFSError(Code.EEXIST, "/: exists")
        if parents:
            await self._ensure_dir(posixpath.dirname(full))
        try:
            ino, name = await self.parent(full)
            attr = await self.client.mkdir(ino, name, stat.S_IFDIR | (mode & 0o7777),
                                           self.uid, self.gid)
        except GFSError as exc:
            if exc.code != "EEXIST" or not exist_ok:
                raise
            attr = await self.resolve(full)
            if not stat.S_ISDIR(attr["mode"]):
                raise GFSError(Code.EEXIST, f"{full}: exists and is not a directory") from None
        return Stat.of(full, attr)

    async def _ensure_dir(self, path: str) -> None:
        """``mkdir -p path``."""
        try:
            attr = await self.resolve(path)
        except GFSError as exc:
            if exc.code != "ENOENT":
                raise
            await self.mkdir(path, DIR_MODE, parents=True, exist_ok=True)
            return
        if not stat.S_ISDIR(attr["mode"]):
            raise GFSError(Code.ENOTDIR, f"{path}: not a directory")

    async def rmdir(self, path: str) -> None:
        ino, name = await self.parent(path)
        await self.client.rmdir(ino, name)

    async def rm(self, path: str, recursive: bool = False) -> None:
        """Remove a file, a symbolic link or an empty directory; a directory
        with entries only with ``recursive`` (else ENOTEMPTY). Removed files
        go to the trash (docs/operations.md) like those removed on a mount."""
        ino, name = await self.parent(path)
        await self._remove(ino, name, recursive)

    async def _remove(self, parent: int, name: bytes, recursive: bool) -> None:
        attr = await self.client.lookup(parent, name)
        if not stat.S_ISDIR(attr["mode"]):
            await self.client.unlink(parent, name)
            return
        if recursive:
            for child, _attr in await self.entries(int(attr["ino"])):
                await self._remove(int(attr["ino"]), child, True)
        await self.client.rmdir(parent, name)

    async def rename(self, src: str, dst: str, replace: bool = True) -> None:
        """rename(2); ``replace=False``: EEXIST if ``dst`` exists."""
        old, old_name = await self.parent(src)
        new, new_name = await self.parent(dst)
        await self.client.rename(old, old_name, new, new_name,
                                 0 if replace else RENAME_NOREPLACE)

    async def snapshot(self, src: str, dst: str) -> dict[str, Any]:
        """Copy-on-write snapshot of a file or a tree (``gfs snapshot``)."""
        attr = await self.resolve(src, follow=False)
        parent, name = await self.parent(dst)
        return dict(await self.client.call("snapshot", {"src": attr["ino"], "parent": parent,
                                                        "name": name}))

    async def setgoal(self, path: str, goal: int, recursive: bool = False) -> dict[str, Any]:
        """Replicas per chunk (``gfs setgoal``); the reply counts the inodes changed."""
        attr = await self.resolve(path)
        self.client.fresh_attrs.pop(int(attr["ino"]), None)
        return dict(await self.client.call("setgoal", {"ino": attr["ino"], "goal": goal,
                                                       "recursive": recursive}))

    # ------------------------------------------------------------ files

    async def open(self, path: str, mode: Mode) -> tuple[Stat, OpenFile]:
        """Resolve (or create, truncate) a regular file as ``mode`` asks."""
        full = paths.normalize(path)
        try:
            attr = await self.resolve(full)
        except GFSError as exc:
            if exc.code != "ENOENT" or not mode.create:
                raise
            attr = await self._create(full, mode)
        else:
            if mode.exclusive:
                raise GFSError(Code.EEXIST, f"{full}: exists")
        if stat.S_ISDIR(attr["mode"]):
            raise GFSError(Code.EISDIR, f"{full}: is a directory")
        if not stat.S_ISREG(attr["mode"]):
            raise GFSError(Code.EINVAL, f"{full}: not a regular file")
        if mode.truncate and attr["size"]:
            attr = await self.client.truncate(int(attr["ino"]), 0)
        size = 0 if mode.truncate else None
        return Stat.of(full, attr), self.client.open_file(int(attr["ino"]), 0, size)

    async def _create(self, full: str, mode: Mode) -> Attr:
        ino, name = await self.parent(full)
        try:
            return await self.client.create(ino, name, stat.S_IFREG | FILE_MODE,
                                            self.uid, self.gid)
        except GFSError as exc:        # made meanwhile by another client
            if exc.code != "EEXIST" or mode.exclusive:
                raise
            return await self.resolve(full)

    async def read_bytes(self, path: str, start: int | None = None,
                         end: int | None = None) -> bytes:
        """The bytes ``[start:end]`` of a file (slice rules: None = the
        beginning/end, negative = from the end)."""
        st, of = await self.open(path, Mode.parse("rb"))
        try:
            size = await self.client.file_size(st.ino)
            first, last, _step = slice(start, end).indices(size)
            return await self.client.read(st.ino, first, last - first) if last > first else b""
        finally:
            await self.client.release(of)

    async def write_bytes(self, path: str, data: bytes | bytearray | memoryview) -> int:
        """Create or replace a file with ``data``; written back (as by a close)
        on return."""
        st, of = await self.open(path, Mode.parse("wb"))
        try:
            if data:
                await self.client.write(st.ino, 0, bytes(data))
        finally:
            await self.client.release(of)
        return len(data)

    async def append(self, ino: int, data: bytes | bytearray | memoryview) -> int:
        """Record appends (GFS §3.3) of ``data`` cut into records of at most
        chunk_size/4 bytes, in order, as a write to an O_APPEND file on a
        mount; the end offset of the last one."""
        limit = await self.client.max_record()
        view = memoryview(bytes(data))
        end = 0
        for at in range(0, len(view), limit):
            piece = view[at:at + limit]
            end = await self.client.append(ino, piece) + len(piece)
        return end
