"""POSIX paths inside the file system (``/a/b``), resolved to inodes by
``lookup`` from the root, as the admin CLI (:mod:`gfsfs.tools.cli`) and the public
client API (:mod:`gfsfs.client.api`) both do.

:func:`resolve` walks the path through any object with the three namespace
lookups of :class:`Lookups`: a :class:`gfsfs.client.core.Client` has them, and
:class:`MasterLookups` makes them from bare RPCs to the master. Symbolic links
are followed in every component but the last (and in the last with
``follow=True``), at most :data:`MAX_SYMLINKS` of them.

Failures: :class:`~gfsfs.common.errors.GFSError` from the master (``ENOENT`` for a
missing component), ``GFSError(Code.ENOTDIR)`` when a component that is not a
directory is walked through, and ``OSError(ELOOP)`` for too many symbolic links
(no wire code stands for that: it never crosses the wire).
"""
from __future__ import annotations

import errno
import os
import posixpath
import stat
from typing import Any, Protocol

from gfsfs.common.errors import Code, GFSError
from gfsfs.common.masters import Masters

ROOT_INO = 1
MAX_SYMLINKS = 40

Attr = dict[str, Any]


class Lookups(Protocol):
    async def getattr(self, ino: int) -> Attr: ...
    async def lookup(self, parent: int, name: bytes) -> Attr: ...
    async def readlink(self, ino: int) -> bytes: ...


class MasterLookups:
    """:class:`Lookups` as bare master RPCs (no client caches), at the
    primary of ``masters`` (:class:`gfsfs.common.masters.Masters`)."""

    def __init__(self, masters: Masters) -> None:
        self.masters = masters

    async def getattr(self, ino: int) -> Attr:
        return dict(await self.masters.call("getattr", {"ino": ino}))

    async def lookup(self, parent: int, name: bytes) -> Attr:
        return dict(await self.masters.call("lookup", {"parent": parent, "name": name}))

    async def readlink(self, ino: int) -> bytes:
        return bytes((await self.masters.call("readlink", {"ino": ino}))["target"])


def components(path: str | bytes) -> list[bytes]:
    """The names along ``path`` (empty ones and ``.`` dropped; ``..`` kept,
    the master answers it)."""
    raw = os.fsencode(path)
    return [c for c in raw.split(b"/") if c and c != b"."]


def normalize(path: str) -> str:
    """``path`` as an absolute, normalized POSIX path (relative = from the root)."""
    full = posixpath.normpath("/" + path)
    return "/" + full.lstrip("/")


def split(path: str) -> tuple[str, bytes]:
    """(parent path, last name) of a path naming something below the root."""
    full = normalize(path)
    parent, name = posixpath.split(full)
    if not name:
        raise GFSError(Code.EINVAL, f"{path}: the root has no parent")
    return parent, os.fsencode(name)


async def resolve(ops: Lookups, path: str | bytes, follow: bool = False) -> Attr:
    """The attributes of what ``path`` (from the root) names; ``follow``: a
    symbolic link in the last component is followed too."""
    todo = components(path)
    attr = await ops.getattr(ROOT_INO)
    links = 0
    while todo:
        name = todo.pop(0)
        if not stat.S_ISDIR(attr["mode"]):
            raise GFSError(Code.ENOTDIR, f"{os.fsdecode(path)}: not a directory on the way")
        parent = attr
        attr = await ops.lookup(parent["ino"], name)
        if stat.S_ISLNK(attr["mode"]) and (todo or follow):
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.fsdecode(path))
            target = await ops.readlink(attr["ino"])
            todo = components(target) + todo
            attr = await ops.getattr(ROOT_INO) if target.startswith(b"/") else parent
    return attr
