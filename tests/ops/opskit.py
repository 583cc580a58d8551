"""The ops tier's harness: gfsfs.fuse.operations.Operations driven directly,
without a kernel mount (as S3QL's t3_fs_api does), against a real cluster.

The client config is made by gfsfs/fuse/mount.py's own functions from the
arguments ``gfs-mount MASTER_URL MOUNTPOINT`` would get, and the Client and
Operations are built as its ``serve`` builds them; only ``pyfuse3.init``,
``pyfuse3.main`` and the fallocate hook (gfsfs.fuse.ext) are left out. The
handlers are then awaited under trio as pyfuse3's request loop would await
them, with:

* :class:`Ctx`: pyfuse3's own ``RequestContext`` (constructible from Python,
  but its fields are read-only zeros there) with the uid/gid/pid/umask of a
  kernel request;
* :func:`fields`: pyfuse3's ``SetattrFields`` with the chosen ``update_*``
  flags set, the same way;
* :func:`readdir`: a real ``pyfuse3.ReaddirToken`` and, while the handler
  runs, ``pyfuse3.readdir_reply`` replaced by a stand-in for the kernel's
  buffer (it holds ``room`` entries, then answers False, as the real one does
  when the buffer is full). The real one needs a request from /dev/fuse.

``pyfuse3.invalidate_inode`` (called by ``open``) is left real: without a
session libfuse answers EINVAL, which Operations logs and ignores.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pyfuse3
import pytest
import trio
from pyfuse3 import EntryAttributes, FUSEError

from conftest import TEST_CHUNK_SIZE
from gfsfs.client.core import Client
from gfsfs.common.config import ClientConfig
from gfsfs.fuse import mount
from gfsfs.fuse.operations import Operations
from gfsfs.tools.localcluster import Cluster

CS = TEST_CHUNK_SIZE
ROOT = pyfuse3.ROOT_INODE
MOUNTPOINT = "/nonexistent/gfsfs-ops"     # mount.py's argument; nothing is mounted there


class Ctx(pyfuse3.RequestContext):
    """A ``pyfuse3.RequestContext`` carrying a request's caller. ``pid`` 0 (a
    request the kernel makes itself) makes Operations use ``gid`` alone as
    the caller's groups; a real pid has its supplementary groups read from
    /proc."""

    def __init__(self, uid: int = 0, gid: int = 0, pid: int = 0, umask: int = 0o022) -> None:
        super().__init__()
        self._caller = (uid, gid, pid, umask)

    uid = property(lambda self: self._caller[0])        # type: ignore[assignment]
    gid = property(lambda self: self._caller[1])        # type: ignore[assignment]
    pid = property(lambda self: self._caller[2])        # type: ignore[assignment]
    umask = property(lambda self: self._caller[3])      # type: ignore[assignment]


ROOT_CTX = Ctx(0, 0, os.getpid(), 0o022)


def user(uid: int, gid: int | None = None, umask: int = 0o022) -> Ctx:
    """An unprivileged caller (its groups: ``gid`` only)."""
    return Ctx(uid, uid if gid is None else gid, 0, umask)


_FIELDS = ("update_atime", "update_mtime", "update_ctime", "update_mode",
           "update_uid", "update_gid", "update_size")


class _Fields(pyfuse3.SetattrFields):
    def __init__(self, chosen: frozenset[str]) -> None:
        super().__init__()
        self._chosen = chosen


for _name in _FIELDS:
    setattr(_Fields, _name, property(lambda self, n=_name: n in self._chosen))


def fields(*names: str) -> pyfuse3.SetattrFields:
    """``SetattrFields`` with ``update_<name>`` set for each name ("size", "mode", ...)."""
    chosen = frozenset(f"update_{n}" for n in names)
    unknown = chosen - set(_FIELDS)
    if unknown:
        raise ValueError(f"no such SetattrFields: {sorted(unknown)}")
    return _Fields(chosen)


def attrs(**values: int) -> EntryAttributes:
    """``EntryAttributes`` with the given ``st_*`` values (setattr's ``attr``)."""
    e = EntryAttributes()
    for key, value in values.items():
        setattr(e, key, value)
    return e


def mount_config(master_url: str) -> ClientConfig:
    """The config gfs-mount MASTER_URL MOUNTPOINT runs with (mount.main)."""
    args = mount.parse_args([master_url, MOUNTPOINT])
    cfg = mount.client_config(args, mount.split_options(args.options))
    return dataclasses.replace(cfg, log_dir=os.path.abspath(cfg.log_dir))


@contextlib.asynccontextmanager
async def operations(master_url: str, read_only: bool = False) -> AsyncIterator[Operations]:
    """A Client and its Operations, as mount.serve makes them: one "mount"
    (another one is another client, with caches and write buffers of its own)."""
    cfg = mount_config(master_url)
    async with Client.open(cfg) as client:
        yield Operations(client, cfg, read_only=read_only)


OpsTest = Callable[[Operations, int], Awaitable[Any]]


def run(cluster: Cluster, test: OpsTest, name: str = "t", timeout: float = 30.0,
        read_only: bool = False) -> None:
    """``await test(ops, d)`` in a trio run, ``d`` a fresh directory (made
    through ``ops.mkdir`` as root, mode 0777) named ``name``; the daemons'
    logs are printed if it fails."""
    async def main() -> None:
        with trio.fail_after(timeout):
            async with operations(cluster.url) as ops:
                d = (await ops.mkdir(ROOT, name.encode()[:200], 0o777, Ctx(umask=0))).st_ino
                if not read_only:
                    await test(ops, d)
                    return
            async with operations(cluster.url, read_only=True) as ops:
                await test(ops, d)
    try:
        trio.run(main)
    except BaseException:
        print(cluster.logs_text())
        raise


def dirname(request: pytest.FixtureRequest) -> str:
    """A directory name for the test being run."""
    return request.node.name.replace("[", "_").replace("]", "")


@contextlib.contextmanager
def fuse_errno(code: int) -> Iterator[None]:
    """The block must raise ``pyfuse3.FUSEError`` itself (no subclass, no
    other exception) with errno ``code``."""
    try:
        yield
    except FUSEError as exc:
        assert type(exc) is FUSEError, f"{type(exc)!r} is not FUSEError itself"
        assert exc.errno == code, \
            f"errno {errno.errorcode.get(exc.errno, exc.errno)}, " \
            f"wanted {errno.errorcode[code]}"
        return
    raise AssertionError(f"no FUSEError({errno.errorcode[code]})")


Entry = tuple[bytes, EntryAttributes, int]


class KernelBuffer:
    """What Operations hands ``pyfuse3.readdir_reply``: room for ``room``
    entries (None: unlimited), like the kernel's readdir buffer."""

    def __init__(self, token: pyfuse3.ReaddirToken, room: int | None) -> None:
        self.token = token
        self.room = room
        self.entries: list[Entry] = []

    def reply(self, token: pyfuse3.ReaddirToken, name: bytes, attr: EntryAttributes,
              next_id: int) -> bool:
        assert token is self.token, "readdir_reply got another request's token"
        assert isinstance(name, bytes) and isinstance(attr, EntryAttributes)
        if self.room is not None and len(self.entries) >= self.room:
            return False
        self.entries.append((name, attr, next_id))
        return True


async def readdir(ops: Operations, fh: int, start_id: int = 0,
                  room: int | None = None) -> list[Entry]:
    """One READDIRPLUS request: what ``ops.readdir(fh, start_id, token)`` replies."""
    buf = KernelBuffer(pyfuse3.ReaddirToken(), room)
    real = pyfuse3.readdir_reply
    pyfuse3.readdir_reply = buf.reply
    try:
        await ops.readdir(fh, start_id, buf.token)
    finally:
        pyfuse3.readdir_reply = real
    return buf.entries


async def listdir(ops: Operations, ino: int, ctx: Ctx = ROOT_CTX,
                  room: int | None = 4) -> list[Entry]:
    """opendir, READDIRPLUS requests of ``room`` entries from each reply's
    last cookie until one comes back empty, releasedir; as the kernel lists
    a directory."""
    fh = await ops.opendir(ino, ctx)
    out: list[Entry] = []
    try:
        start = 0
        while True:
            got = await readdir(ops, fh, start, room)
            if not got:
                return out
            out += got
            start = got[-1][2]
    finally:
        await ops.releasedir(fh)


async def names(ops: Operations, ino: int, ctx: Ctx = ROOT_CTX) -> list[bytes]:
    """The directory's entries other than '.' and '..', sorted (readdir's
    order is the master's)."""
    return sorted(n for n, _, _ in await listdir(ops, ino, ctx) if n not in (b".", b".."))


async def new_file(ops: Operations, parent: int, name: bytes, data: bytes = b"",
                   mode: int = 0o644, ctx: Ctx = ROOT_CTX) -> int:
    """create + write + flush + release; the file's inode."""
    info, entry = await ops.create(parent, name, mode, os.O_WRONLY | os.O_CREAT, ctx)
    assert stat.S_ISREG(entry.st_mode)
    if data:
        assert await ops.write(info.fh, 0, data) == len(data)
    await ops.flush(info.fh)
    await ops.release(info.fh)
    return entry.st_ino


async def read_all(ops: Operations, ino: int, size: int, piece: int = 128 * 1024,
                   ctx: Ctx = ROOT_CTX) -> bytes:
    """open O_RDONLY, reads of ``piece`` bytes (the kernel's usual size) up to
    ``size`` or EOF, release."""
    info = await ops.open(ino, os.O_RDONLY, ctx)
    out = bytearray()
    try:
        while len(out) < size:
            got = await ops.read(info.fh, len(out), min(piece, size - len(out)))
            if not got:
                break
            out += got
    finally:
        await ops.release(info.fh)
    return bytes(out)


def pattern(n: int, seed: int = 1) -> bytes:
    """``n`` bytes that differ at every offset within 251 and between seeds."""
    block = bytes((i * 7 + seed * 13) % 251 for i in range(251 * 16))
    return (block * (n // len(block) + 1))[:n]
