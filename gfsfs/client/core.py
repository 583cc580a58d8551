"""The FUSE-free client library: namespace RPCs to the master and the data
plane to the chunkds. Used by the FUSE driver (:mod:`gfsfs.fuse.operations`), the CLI
and tests::

    async with Client.open(cfg) as client:
        attr = await client.create(1, b"f", 0o644, 0, 0)
        await client.write(attr["ino"], 0, b"hello")
        await client.flush(attr["ino"])
        data = await client.read(attr["ino"], 0, 5)

Caches (GFS §2.4): chunk locations per inode (index -> handle, version,
replicas, or a hole) for ``location_timeout`` seconds and write leases until
they expire; both are dropped on STALE/NOCHUNK or any replica failure.
Attributes are cached by the kernel (attr_timeout), not here.

Reads see this client's own writes at once: buffered and in-flight data is
laid over what the chunkds return (docs/consistency.md, "What a client caches").
The write half (buffering, push, commit, extend) is :mod:`gfsfs.client.write`;
record append (O_APPEND) is :mod:`gfsfs.client.append`. The types all three
share (locations, leases, per-inode state) are :mod:`gfsfs.client.types`.

Concurrency: all state is touched from one trio thread; an ``InodeState`` is
changed only between awaits, so no lock guards it. Background work (read-ahead
fetches, write batches) runs in the client's nursery.
"""
from __future__ import annotations

import logging
import os
import secrets
import ssl
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from gfsfs.client import perms
from gfsfs.client.append import Appender
from gfsfs.client.chunkio import AheadPiece, ReadAhead, overlay, split_range
from gfsfs.client.local import LocalReads
from gfsfs.client.session import (ROOT_INO, Session, from_master, open_session, read_password,
                                  to_master)
from gfsfs.client.types import Attr, ChunkLoc, Ctx, InodeState, Replica, replica
from gfsfs.client.write import Writer
from gfsfs.common.auth import tokens
from gfsfs.common.auth.secret import Secret
from gfsfs.common import retry, rpc
from gfsfs.common.config import ClientConfig
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.masters import Masters
from gfsfs.common.protocol import PROTOCOL_VERSION, check_version, client_master

log = logging.getLogger(__name__)

# Namespace mutations that carry a request id (``rid``, the protocol's
# ``Mutation`` fields): one per logical operation, the same on every retry, so
# a create retried after a lost reply or a failover gets its own inode back.
RID_RPCS = frozenset(name for name, m in client_master.MESSAGES.items()
                     if "rid" in m.request.__required_keys__ | m.request.__optional_keys__)
# Namespace RPCs that change nothing (others forget Client.fresh_attrs).
READ_ONLY = frozenset({"lookup", "getattr", "readdir", "readlink", "getxattr", "listxattr",
                       "statfs", "chunks"})
# data-path RPCs an export session sends with the ctx of the file's opener
# (the master checks it: master.exports.guard)
DATA_RPCS = frozenset({"chunks", "lease", "append_lease", "extend"})
FETCH_AHEAD_CHUNKS = 16   # chunk entries asked for at once when locations are missing


def new_rid() -> int:
    """A fresh request id: random, 1..2**63-1."""
    return secrets.randbits(63) or 1


@dataclass
class OpenFile:
    """Per-open-file state (the FUSE ``fh`` maps to one of these)."""
    ino: int
    flags: int
    ahead: ReadAhead
    err_seen: int = 0               # the inode's err_seq its last fsync reported

    @property
    def writable(self) -> bool:
        """Open for writing: a size change through it (ftruncate) needs no
        write permission, the open checked it."""
        return self.flags & os.O_ACCMODE != os.O_RDONLY


class Client:
    def __init__(self, cfg: ClientConfig, http: httpx.AsyncClient,
                 nursery: trio.Nursery) -> None:
        self.cfg = cfg
        self.http = http
        # the masters of cfg.master_url and the one believed primary
        self.masters = Masters(http, cfg.master_url, cfg.failover_timeout, cfg.retries)
        self.nursery = nursery
        self.inodes: dict[int, InodeState] = {}
        self.chunk_size = 0
        # chunkd I/O stalls at most this long (a stopped or cut-off chunkd
        # must not hold a read or write for the whole request_timeout)
        self.chunkd_timeout = cfg.chunkd_timeout or cfg.request_timeout
        self.busy_addrs: dict[str, int] = {}      # reads in flight per chunkd
        self.failed_addrs: dict[str, float] = {}  # chunkd -> monotonic time of last failure
        self.no_xattrs: dict[int, float] = {}     # ino -> until when it is known to have none
        self.absent_xattrs: dict[int, dict[bytes, float]] = {}  # ino -> name -> until when
        # attributes a mutation of ours answered (a new inode's, its parent
        # directory's) for the one getattr the kernel sends next, having dropped
        # its own copy; any other change through this client forgets them all
        self.fresh_attrs: dict[int, tuple[Attr, float]] = {}
        self.writer = Writer(self)
        self.local_reads = LocalReads(cfg.short_circuit)
        self.appender = Appender(self)
        # an export session (open_session): its root is shown as our inode 1
        self.session: Session | None = None
        self.root = ROOT_INO

    @classmethod
    @asynccontextmanager
    async def open(cls, cfg: ClientConfig,
                   secret: Secret | None = None,
                   tls: ssl.SSLContext | None = None,
                   session: bool = False) -> AsyncIterator[Client]:
        """``secret``: the cluster secret, to sign the requests to the masters
        with (the chunkds are shown the chunk tokens the master hands out).
        ``tls``: how ``https://`` masters and chunkds are verified and the
        cert shown to them (:func:`gfsfs.common.tls.client_context`).
        ``session``: open an export session first (:func:`gfsfs.client.session.wanted`;
        :mod:`gfsfs.client.session`); EACCES if no export lets us in."""
        try:
            async with rpc.make_http(cfg.request_timeout,
                                     local_address=cfg.source_address or None,
                                     secret=secret, tls=tls) as http, \
                    trio.open_nursery() as nursery:
                client = cls(cfg, http, nursery)
                if session:
                    await client.open_session()
                try:
                    yield client
                finally:
                    with trio.CancelScope(shield=True):
                        with trio.move_on_after(cfg.request_timeout):
                            await client.flush_all()
                    nursery.cancel_scope.cancel()
                    client.local_reads.close()
        except BaseExceptionGroup as group:   # the caller's own error, not a group
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def open_session(self) -> None:
        """Open (or open again) our export session; its root is our inode 1."""
        password = read_password(self.cfg.password_file) if self.cfg.password_file else None
        session = await open_session(self.masters, self.http, self.cfg.export or "/", password)
        self.session = None if session.open else session
        self.root = session.root

    def state(self, ino: int) -> InodeState:
        st = self.inodes.get(ino)
        if st is None:
            st = self.inodes[ino] = InodeState()
        return st

    def forget(self, ino: int) -> None:
        """The kernel forgot ``ino``: drop its caches unless it has dirty data."""
        st = self.inodes.get(ino)
        if st is not None and not st.busy():
            del self.inodes[ino]
            self.appender.forget(ino)

    async def discard(self, ino: int) -> None:
        """Drop this client's unsent writes to ``ino`` (a file about to be
        removed): nothing of it is written back, and no failure is reported."""
        await self.writer.discard(ino)

    # ------------------------------------------------------------ master RPCs

    @property
    def master(self) -> str:
        """The URL of the master believed primary."""
        return self.masters.primary

    async def call(self, name: str, body: dict[str, Any]) -> Any:
        """Master RPC ``name``, at the believed primary, failing over
        (:class:`gfsfs.common.masters.Masters`). A mutation of :data:`RID_RPCS`
        gets its request id here, once for all its attempts, which also
        makes it safe to send again."""
        if name in RID_RPCS and "rid" not in body:
            body = {**body, "rid": new_rid()}
        if self.session is None and self.root == ROOT_INO:
            return await self.masters.call(name, body)
        body = self._as_opener(name, to_master(self.root, body))
        try:
            reply = await self.masters.call(name, body)
        except GFSError as exc:
            if exc.code != Code.UNAUTHORIZED or self.session is None:
                raise
            log.warning("export session refused (%s): opening a new one", exc.message)
            await self.open_session()           # its rule changed: are we still let in?
            reply = await self.masters.call(name, body)
        return from_master(self.root, reply)

    async def _ns(self, rpc_name: str, ctx: Ctx | None, /, **fields: Any) -> Any:
        if rpc_name not in READ_ONLY:
            self.fresh_attrs.clear()
        if ctx is not None:
            fields["ctx"] = ctx
        reply = await self.call(rpc_name, fields)
        parent = reply.pop("parent_attr", None) if isinstance(reply, dict) else None
        if parent is not None:
            self.fresh_attrs[parent["ino"]] = (parent, time.monotonic() + self.cfg.attr_timeout)
        return reply

    def _overlay(self, attr: Attr) -> Attr:
        """The size this client knows of: the master's plus unextended writes.
        Also notes inodes without xattrs (``ls -l`` asks for ACLs on every file)."""
        if attr.get("nxattr") == 0:
            if len(self.no_xattrs) > 100_000:
                self.no_xattrs.clear()
            self.no_xattrs[attr["ino"]] = time.monotonic() + self.cfg.attr_timeout
        else:
            self.no_xattrs.pop(attr["ino"], None)
        st = self.inodes.get(attr["ino"])
        if st is not None and st.pending_end > attr["size"]:
            attr = dict(attr, size=st.pending_end)
        queued = self.appender.queued_bytes(attr["ino"])
        if queued:                  # where our queued records will end, as far as we know
            attr = dict(attr, size=attr["size"] + queued)
        return attr

    async def lookup(self, parent: int, name: bytes, ctx: Ctx | None = None) -> Attr:
        return self._overlay(await self._ns("lookup", ctx, parent=parent, name=name))

    async def getattr(self, ino: int, ctx: Ctx | None = None) -> Attr:
        hit = self.fresh_attrs.pop(ino, None)
        if hit is not None and hit[1] > time.monotonic():
            return self._overlay(hit[0])
        return self._overlay(await self._ns("getattr", ctx, ino=ino))

    async def setattr(self, ino: int, ctx: Ctx | None = None, **changes: Any) -> Attr:
        """Change mode/uid/gid/size/atime_ns/mtime_ns; a size goes through
        :meth:`truncate` so chunks are cut too. ``write_handle=True``: the
        change comes through a descriptor open for writing (ftruncate)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        await self.appender.drain(ino)
        if "atime_ns" in changes or "mtime_ns" in changes:
            # data written before explicit times must not stamp its own
            # mtime over them when it is flushed later (cp -a sets the times
            # on the open target before closing it)
            await self.flush(ino)
        if "size" in changes:
            return await self.truncate(ino, changes.pop("size"), ctx, **changes)
        return self._overlay(await self._ns("setattr", ctx, ino=ino, **changes))

    async def create(self, parent: int, name: bytes, mode: int, uid: int, gid: int,
                     rdev: int = 0, ctx: Ctx | None = None) -> Attr:
        attr = self._overlay(await self._ns("create", ctx, parent=parent, name=name, mode=mode,
                                            uid=uid, gid=gid, rdev=rdev))
        self.state(attr["ino"]).size = int(attr["size"])      # 0: its chunks are all new
        self._opened_by(attr["ino"], ctx)
        self.fresh_attrs[attr["ino"]] = (attr, time.monotonic() + self.cfg.attr_timeout)
        return attr

    async def create_open(self, parent: int, name: bytes, mode: int, uid: int, gid: int,
                          flags: int, ctx: Ctx | None = None) -> Attr:
        """:meth:`create` for an open(2) with O_CREAT and ``flags``. If the
        name was taken meanwhile by someone else (another client; the caller's
        lookup said it was free), open that file as open(2) would, unless
        O_EXCL: so racing O_CREAT opens all succeed."""
        try:
            return await self.create(parent, name, mode, uid, gid, 0, ctx)
        except GFSError as exc:
            if exc.code != Code.EEXIST or flags & os.O_EXCL:
                raise
        log.debug("create %r: made meanwhile elsewhere; opening it", name)
        return await self._open_taken(parent, name, flags, ctx)

    async def _open_taken(self, parent: int, name: bytes, flags: int, ctx: Ctx | None) -> Attr:
        """``create`` found ``name`` taken: check that the caller may open it as
        ``flags`` asks (only the directory was checked), honour O_TRUNC, and
        return its attributes."""
        attr = await self.lookup(parent, name, ctx)
        if stat.S_ISDIR(attr["mode"]):
            raise GFSError(Code.EISDIR, f"{name!r}: is a directory")
        if not stat.S_ISREG(attr["mode"]):   # a fifo or socket made by mknod: not ours to open
            raise GFSError(Code.EEXIST, f"{name!r}: exists and is not a regular file")
        if not await self.access(attr["ino"], perms.open_access(flags), ctx):
            raise GFSError(Code.EACCES, f"{name!r}: permission denied")
        if flags & os.O_TRUNC and attr["size"]:
            attr = await self.setattr(attr["ino"], ctx, size=0)
        return attr

    async def access(self, ino: int, want: int, ctx: Ctx | None = None) -> bool:
        """access(2): may the caller access ``ino`` as ``want`` (``os.R_OK``,
        ``W_OK``, ``X_OK`` bits) asks (:func:`gfsfs.client.perms.allowed`)?"""
        return perms.allowed(await self.getattr(ino), ctx, want)

    async def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int,
                    ctx: Ctx | None = None) -> Attr:
        return self._overlay(await self._ns("mkdir", ctx, parent=parent, name=name, mode=mode,
                                            uid=uid, gid=gid))

    async def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int,
                      ctx: Ctx | None = None) -> Attr:
        return self._overlay(await self._ns("symlink", ctx, parent=parent, name=name,
                                            target=target, uid=uid, gid=gid))

    async def link(self, ino: int, parent: int, name: bytes, ctx: Ctx | None = None) -> Attr:
        return self._overlay(await self._ns("link", ctx, ino=ino, parent=parent, name=name))

    async def unlink(self, parent: int, name: bytes, ctx: Ctx | None = None) -> None:
        await self._ns("unlink", ctx, parent=parent, name=name)

    async def rmdir(self, parent: int, name: bytes, ctx: Ctx | None = None) -> None:
        await self._ns("rmdir", ctx, parent=parent, name=name)

    async def rename(self, parent: int, name: bytes, new_parent: int, new_name: bytes,
                     flags: int = 0, ctx: Ctx | None = None) -> None:
        """``flags``: RENAME_NOREPLACE, RENAME_EXCHANGE of :mod:`gfsfs.common.protocol`."""
        await self._ns("rename", ctx, parent=parent, name=name, new_parent=new_parent,
                       new_name=new_name, flags=flags)

    async def readdir(self, ino: int, offset: int = 0, limit: int = 512,
                      ctx: Ctx | None = None) -> list[tuple[bytes, Attr, int]]:
        reply = await self._ns("readdir", ctx, ino=ino, offset=offset, limit=limit)
        return [(bytes(n), self._overlay(a), int(o)) for n, a, o in reply["entries"]]

    async def readlink(self, ino: int, ctx: Ctx | None = None) -> bytes:
        return bytes((await self._ns("readlink", ctx, ino=ino))["target"])

    def _known_without_xattrs(self, ino: int) -> bool:
        return self.no_xattrs.get(ino, 0.0) > time.monotonic()

    def _known_absent(self, ino: int, name: bytes) -> bool:
        return self.absent_xattrs.get(ino, {}).get(name, 0.0) > time.monotonic()

    async def setxattr(self, ino: int, name: bytes, value: bytes, flags: int = 0,
                       ctx: Ctx | None = None) -> None:
        self.no_xattrs.pop(ino, None)
        self.absent_xattrs.pop(ino, None)
        await self._ns("setxattr", ctx, ino=ino, name=name, value=value, flags=flags)

    async def getxattr(self, ino: int, name: bytes, ctx: Ctx | None = None) -> bytes:
        if self._known_without_xattrs(ino) or self._known_absent(ino, name):
            raise GFSError(Code.ENODATA, "no such attribute")
        try:
            return bytes((await self._ns("getxattr", ctx, ino=ino, name=name))["value"])
        except GFSError as exc:
            # the kernel asks for security.capability before every write(2):
            # remember the answer as long as attributes are cached
            if exc.code == Code.ENODATA:
                if len(self.absent_xattrs) > 100_000:
                    self.absent_xattrs.clear()
                self.absent_xattrs.setdefault(ino, {})[name] = \
                    time.monotonic() + self.cfg.attr_timeout
            raise

    async def listxattr(self, ino: int, ctx: Ctx | None = None) -> list[bytes]:
        if self._known_without_xattrs(ino):
            return []
        return [bytes(n) for n in (await self._ns("listxattr", ctx, ino=ino))["names"]]

    async def removexattr(self, ino: int, name: bytes, ctx: Ctx | None = None) -> None:
        self.no_xattrs.pop(ino, None)
        self.absent_xattrs.pop(ino, None)
        await self._ns("removexattr", ctx, ino=ino, name=name)

    async def statfs(self, find_primary: bool = False) -> dict[str, Any]:
        """The master's figures; also the protocol check (the mount's first
        call). ``find_primary``: a shadow that answers and names the primary
        makes the client use the primary from now on (reads included)."""
        reply = await self.call("statfs", {"protocol": PROTOCOL_VERSION})
        check_version(reply.get("protocol"), f"master {self.master}", "this client")
        self.chunk_size = int(reply.get("chunk_size") or self.chunk_size)
        if find_primary and reply.get("primary") is False and reply.get("primary_url"):
            self.masters.prefer(reply["primary_url"])
        return reply

    async def get_chunk_size(self) -> int:
        if not self.chunk_size:
            await self.statfs()
        return self.chunk_size

    # ------------------------------------------------------------ locations

    async def _fetch_locations(self, ino: int, first: int, count: int) -> dict[int, ChunkLoc]:
        """Chunks ``first`` .. ``first+count-1`` (absent: holes) and the size,
        from the master; cached only if nothing changed the inode here while
        the call was out (a lease or extend of ours is newer than the reply)."""
        st = self.state(ino)
        gen = st.gen
        reply = await self.call("chunks", {"ino": ino, "first": first, "count": count})
        self.chunk_size = int(reply.get("chunk_size") or self.chunk_size)
        found: dict[int, ChunkLoc] = {}
        for c in reply["chunks"]:
            reps = tuple(replica(r) for r in c.get("replicas", []))
            found[int(c["index"])] = ChunkLoc(int(c["handle"]), int(c["version"]), reps,
                                              c.get("token"))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("locations of inode %d from %d: size %s, %s%s", ino, first, reply["size"],
                      {i: (c.handle, c.version) for i, c in found.items()},
                      "" if st.gen == gen else " (outdated meanwhile: not cached)")
        if st.gen != gen:
            return found
        st.size = int(reply["size"])
        expires = time.monotonic() + self.cfg.location_timeout
        for index in range(first, first + count):
            st.locs[index] = (found.get(index), expires)
        return found

    async def locate(self, ino: int, index: int) -> ChunkLoc | None:
        """The chunk at ``index`` (None for a hole), from the cache if fresh."""
        st = self.state(ino)
        cached = st.locs.get(index)
        if cached is None or cached[1] < time.monotonic():
            return (await self._fetch_locations(ino, index, FETCH_AHEAD_CHUNKS)).get(index)
        return cached[0]

    def drop_location(self, ino: int, index: int | None = None) -> None:
        st = self.inodes.get(ino)
        if st is None:
            return
        if index is None:
            st.locs.clear()
        else:
            st.locs.pop(index, None)

    async def file_size(self, ino: int, need: int = 0) -> int:
        """The file size as far as this client knows, asking the master when the
        cached size is unknown or smaller than ``need``."""
        st = self.state(ino)
        if st.size < 0 or st.size < need:
            first = max(0, need - 1) // await self.get_chunk_size()
            await self._fetch_locations(ino, first, FETCH_AHEAD_CHUNKS)
        return max(st.size, st.pending_end, 0)

    # ------------------------------------------------------------ open files

    def open_file(self, ino: int, flags: int = 0, size: int | None = None) -> OpenFile:
        """Close-to-open: forget the cached size and holes of ``ino`` (another
        client may have grown the file); known chunks stay cached. ``size``:
        the master's size of it as of now (the file was just created)."""
        st = self.state(ino)
        self.appender.targets.pop(ino, None)     # the last chunk may have moved on
        if not (st.wbuf or st.inflight):
            st.size = -1 if size is None else size
            st.locs = {i: v for i, v in st.locs.items() if v[0] is not None}
        return OpenFile(ino, flags, ReadAhead(self.cfg.readahead_bytes, self.cfg.readahead_pieces),
                        st.err_seq)

    def _as_opener(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A data-path RPC of a session, sent in the name of whoever opened
        the file (the master checks that caller's permission)."""
        if name not in DATA_RPCS or "ctx" in body or self.session is None:
            return body
        ctx = self.state(body["ino"]).ctx
        return body if ctx is None else {**body, "ctx": ctx}

    def _opened_by(self, ino: int, ctx: Ctx | None) -> None:
        """In an export session: ``ctx`` opened ``ino``, so its chunks are
        fetched and leased in its name; locations another caller fetched are
        not reused for it (the master checks each caller's permission)."""
        if self.session is None or ctx is None:
            return
        st = self.state(ino)
        if st.ctx != ctx:
            st.ctx = ctx
            st.locs = {}

    async def open_inode(self, ino: int, flags: int, ctx: Ctx | None = None) -> OpenFile:
        """open(2) of an existing ``ino`` with ``flags`` (the caller checked
        access): O_TRUNC empties the file first."""
        self._opened_by(ino, ctx)
        if flags & os.O_TRUNC:
            await self.setattr(ino, ctx, size=0)
            return self.open_file(ino, flags, 0)
        return self.open_file(ino, flags)

    async def release(self, of: OpenFile) -> None:
        of.ahead.pieces.clear()
        await self.flush(of.ino, of)

    # ------------------------------------------------------------ reads

    async def read(self, ino: int, offset: int, size: int, of: OpenFile | None = None) -> bytes:
        """Up to ``size`` bytes at ``offset``; short only at end of file."""
        if ino in self.appender.queues:
            await self.appender.drain(ino)      # our queued records, in place first
        st = self.state(ino)
        if size <= 0:
            return b""
        fsize = await self.file_size(ino)
        if offset + size > fsize:
            fsize = await self.file_size(ino, offset + size)
        size = min(size, fsize - offset)
        if size <= 0:
            return b""
        # our own writes not yet committed (buffered, or in batches under
        # way when the read starts) are laid over what the chunkds hold
        dirty = [b.extents for b in st.inflight] + [list(st.wbuf.extents)] \
            if st.wbuf or st.inflight else None
        if of is not None and dirty is None:
            # read-ahead only over committed data: pieces fetched while a
            # write is buffered would hold the old bytes under the new gen
            ahead = of.ahead
            ahead.sync_gen(st.gen)
            if ahead.observe(offset, size):
                for piece in ahead.plan(offset, fsize):
                    self.nursery.start_soon(self._fetch_ahead, ino, piece)
                pieces = ahead.covering(offset, size)
                if pieces is not None:
                    for p in pieces:
                        await p.done.wait()
                    data = ahead.assemble(pieces, offset, size)
                    if data is not None:
                        return data
        data = await self.read_range(ino, offset, size)
        return data if dirty is None else overlay(data, offset, dirty)

    async def _fetch_ahead(self, ino: int, piece: AheadPiece) -> None:
        try:
            piece.data = await self.read_range(ino, piece.start, piece.length)
        except Exception as exc:      # the reader retries the range itself
            log.debug("read-ahead of inode %d at %d failed: %s", ino, piece.start, exc)
            piece.failed = True
        finally:
            piece.done.set()

    async def read_range(self, ino: int, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes (the caller clamped to the file size); holes
        and bytes past a chunk's stored length are zeros."""
        cs = await self.get_chunk_size()
        pieces = split_range(offset, size, cs)
        if len(pieces) == 1:
            p = pieces[0]
            data = await self.read_chunk(ino, p.index, p.chunk_off, p.length)
            return data + bytes(size - len(data)) if len(data) < size else data
        out = bytearray(size)
        for p in pieces:
            data = await self.read_chunk(ino, p.index, p.chunk_off, p.length)
            out[p.file_off - offset:p.file_off - offset + len(data)] = data
        return bytes(out)

    def _order(self, replicas: tuple[Replica, ...]) -> list[Replica]:
        """Replicas to try: not recently failed first, then those on this host
        (short-circuit reads), then least busy."""
        now = time.monotonic()
        return sorted(replicas, key=lambda r: (now - self.failed_addrs.get(r.addr, -1e9) < 10.0,
                                               self.local_reads.rank(r.addr),
                                               self.busy_addrs.get(r.addr, 0)))

    async def read_chunk(self, ino: int, index: int, chunk_off: int, length: int) -> bytes:
        """At most ``length`` bytes of one chunk, failing over between replicas
        and refreshing locations when every replica failed."""
        last: GFSError | None = None
        for attempt in range(max(1, self.cfg.retries)):
            loc = await self.locate(ino, index)
            if loc is None:
                return b""
            for rep in self._order(loc.replicas):
                try:
                    data = await self.local_reads.read(rep, loc, chunk_off, length)
                    if data is not None:
                        return data
                    return await self._get(rep, loc, chunk_off, length)
                except GFSError as exc:
                    log.log(retry.READ.level(attempt), "read of chunk %d from %s failed: %s",
                            loc.handle, rep.addr, exc)
                    self.failed_addrs[rep.addr] = time.monotonic()
                    last = exc
            self.drop_location(ino, index)
            await retry.READ.pause(attempt, log, "read of inode %d chunk %d: no replica answered "
                                   "(try %d)", ino, index, attempt + 1)
        raise GFSError(Code.EIO, f"inode {ino} chunk {index}: no replica answered ({last})")

    async def _get(self, rep: Replica, loc: ChunkLoc, offset: int, length: int) -> bytes:
        url = f"{rep.addr}/chunk/{loc.handle}"
        params = {"offset": offset, "length": length, "version": loc.version}
        headers = {tokens.HEADER: loc.token} if loc.token else None
        self.busy_addrs[rep.addr] = self.busy_addrs.get(rep.addr, 0) + 1
        try:
            with retry.reaching(rep.addr):
                resp = await self.http.get(url, params=params, headers=headers,
                                           timeout=self.chunkd_timeout)
        finally:
            self.busy_addrs[rep.addr] -= 1
        if resp.status_code >= 400:
            rpc.decode_reply(resp.status_code, resp.content)
        data = resp.content
        if len(data) > length:
            raise GFSError(Code.EIO, f"{rep.addr} sent {len(data)} bytes for {length}")
        return data

    # ------------------------------------------------------------ writes

    async def write(self, ino: int, offset: int, data: bytes) -> int:
        self.fresh_attrs.pop(ino, None)
        await self.appender.drain(ino)          # queued records come first
        return await self.writer.write(ino, offset, data)

    async def append(self, ino: int, data: bytes | bytearray | memoryview,
                     sync: bool = False) -> int:
        """Record append (GFS §3.3, :mod:`gfsfs.client.append`): ``data`` (1 to
        chunk_size/4 bytes) lands whole, at least once, at the end of the file;
        returns its file offset once committed on every replica. Other clients
        see it once the size is extended (at the latest after :meth:`flush`)."""
        self.fresh_attrs.pop(ino, None)
        return await self.appender.append(ino, data, sync)

    async def append_records(self, ino: int, data: bytes | bytearray | memoryview,
                             queued: bool = True) -> int:
        """A write(2) to an O_APPEND file: ``data`` as record appends of at
        most :meth:`max_record` bytes, in order (each whole, but other writers'
        records may come between them). ``queued``: handed to the inode's
        sender and returned at once (:meth:`Appender.enqueue`; a failure is
        raised by a later call on the inode, at the latest flush or fsync);
        else each committed before the next, and the bytes appended are short
        if a record fails after earlier ones were committed."""
        if not data:
            return 0
        self.fresh_attrs.pop(ino, None)
        limit = await self.max_record()
        view = memoryview(data)
        done = 0
        while done < len(view):
            piece = view[done:done + limit]
            try:
                if queued:
                    await self.appender.enqueue(ino, piece)
                else:
                    await self.append(ino, piece)
            except GFSError:
                if done:
                    return done
                raise
            done += len(piece)
        return done

    async def max_record(self) -> int:
        """The largest record :meth:`append` takes: chunk_size/4."""
        return await self.appender.max_record()

    async def flush(self, ino: int, of: OpenFile | None = None) -> None:
        """close(2) of a descriptor of ``of``: write back, and report a failure
        of this inode's background work since ``of``'s last fsync (a close
        reports it, it does not consume it: another descriptor of the same
        open file -- a forked child's -- closing first hides nothing)."""
        await self._written_back(ino, of, sync=False)

    async def fsync(self, ino: int, of: OpenFile | None = None) -> None:
        """fsync(2) through ``of``: as :meth:`flush`, made durable, and the
        failures reported are consumed for ``of`` (Linux's errseq_t)."""
        await self._written_back(ino, of, sync=True)

    async def _written_back(self, ino: int, of: OpenFile | None, sync: bool) -> None:
        try:
            await self.appender.drain(ino)
            await self.writer.flush(ino, sync=sync)
            await self.appender.settle(ino)
        except GFSError:
            if of is not None and sync:
                of.err_seen = self.state(ino).err_seq
            raise
        st = self.inodes.get(ino)
        if of is not None and st is not None and st.err_seq > of.err_seen \
                and (sync or of.writable):      # a reader's close is told nothing
            if sync:
                of.err_seen = st.err_seq
            assert st.err_last is not None
            raise GFSError(st.err_last.code, st.err_last.message)

    def note_error(self, ino: int, err: GFSError) -> None:
        """A background write, append or extend of ``ino`` failed (every open
        file of it will hear of it: :meth:`flush`, :meth:`fsync`)."""
        st = self.state(ino)
        st.err_seq += 1
        st.err_last = err

    async def flush_all(self) -> None:
        for ino in list(self.inodes):
            try:
                await self.flush(ino)
            except GFSError as exc:
                log.error("could not write back inode %d: %s", ino, exc)

    async def fallocate(self, ino: int, mode: int, offset: int, length: int) -> None:
        """fallocate(2): mode 0 and FALLOC_FL_KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE."""
        self.fresh_attrs.pop(ino, None)
        await self.appender.drain(ino)
        self.appender.forget(ino)
        await self.writer.fallocate(ino, mode, offset, length)

    async def truncate(self, ino: int, size: int, ctx: Ctx | None = None, **changes: Any) -> Attr:
        await self.appender.drain(ino)
        self.appender.forget(ino)
        return self._overlay(await self.writer.truncate(ino, size, ctx, **changes))
