"""Record append (GFS §3.3): the client half.

``Client.append(ino, data)`` appends ``data`` as one *record*: atomically (the
whole record lands contiguously, never interleaved with another record and
never split across chunks), at least once, at an offset the primary picks --
the end of the file's last chunk. It returns the record's file offset once
every replica has applied it.

One attempt: ``append_lease {ino, index}`` at the master (the lease of the last
chunk; cached per inode until it nears expiry) -> the record to the primary:
inside the ``POST /rpc/append`` message when it is at most :data:`INLINE_MAX`
bytes (the primary forwards it inside ``apply``), else first ``PUT /data/<id>``
down the chain, as for writes. The primary
answers the chunk offset, or ``{"retry": "next_chunk"}`` after padding a chunk
the record does not fit in; the client then asks for the lease of the next
index. Retryable failures (a dead replica, STALE, an expired push) drop the
cached lease and try again, up to ``retries`` times, then give EIO.

Duplicates and padding (see docs/consistency.md):

- *padding*: the tail of a chunk a record did not fit in (zeros, up to
  ``chunk_size/4`` bytes less one byte per chunk), and the zeros a failed
  attempt leaves on replicas that did not apply it;
- *duplicates*: an attempt that failed after the primary applied the record
  (a secondary failed or timed out, or the reply was lost) leaves the record
  on the primary (and possibly some secondaries); the retry appends it again
  further on, so a reader of the primary can see it twice. A record whose
  append finally failed (EIO) may still be present on some replicas.

Records are at most ``chunk_size/4`` bytes (EINVAL otherwise); so at most a
quarter of each chunk is padding. Appends to one inode from one client are not
serialized here: each call is one record, acknowledged once committed on every
replica.

Queued appends (:meth:`Appender.enqueue`, what a write(2) to an O_APPEND file
uses): the record is queued in this client and the call returns, as a
buffered write(2) does; one sender per inode sends what is queued, in order,
as one record of the records queued behind each other (at most
``chunk_size/4`` bytes), while the next ones queue up. Each record stays
whole and contiguous, the records of one batch next to each other in their
order. Everything that looks at the inode's bytes through this client (reads,
plain writes, truncate, setattr, fallocate, flush, fsync, close) first waits
until the queue is sent (:meth:`Appender.drain`), so this client sees its
records in place; a failed send is raised there once (and refuses the records
queued after it until then, so a write(2) cut short by it hides it from no
flush or close). Its attributes count
the queued bytes in the size without waiting (the kernel asks for the size
before every O_APPEND write). At most ``upload_chunk_size`` bytes wait per
inode; a writer past that waits for the sender.

The file size: after the commit, ``extend`` runs in the background, one call
per inode in flight, each covering every record committed before it started.
This client sees its records at once (``pending_end``); others see them when
that extend is done -- at the latest when this client's flush/close/fsync
returns (:meth:`Appender.settle`; close-to-open), which also reports a failed
extend. ``sync=True`` (O_SYNC-like) fsyncs every replica and waits for the
extend before returning.
"""
from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from gfsfs.client.types import RETRYABLE, ChunkLoc, Lease, replica
from gfsfs.client.write import LEASE_MARGIN_NS
from gfsfs.common import retry, rpc
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import INLINE_MAX

if TYPE_CHECKING:
    from gfsfs.client.core import Client

log = logging.getLogger(__name__)

MAX_PADDED_CHUNKS = 1000   # next_chunk answers in a row before giving up (a bug guard)


@dataclass(frozen=True)
class AppendTarget:
    """The chunk appends go to: its index, lease and the lowest offset allowed."""
    index: int
    lease: Lease
    min_offset: int


@dataclass
class _Queue:
    """The queued records of one inode and its sender."""
    records: deque[bytes] = field(default_factory=deque)
    bytes: int = 0                     # queued, not yet taken by the sender
    sending: int = 0                   # in the batch being sent
    queued: int = 0                    # records ever queued
    done: int = 0                      # records ever sent, or dropped with a failure
    running: bool = False
    moved: trio.Event = field(default_factory=trio.Event)    # set when a batch ended
    error: GFSError | None = None      # a failed send: refuses enqueues until a drain raises it


@dataclass
class _Extender:
    """The background ``extend`` of one inode: one call in flight at a time,
    each covering every record committed before it started."""
    want: int = 0                      # largest record end not yet sent to the master
    running: bool = False
    idle: trio.Event = field(default_factory=trio.Event)   # set when a run ends
    error: GFSError | None = None      # a failed extend, raised by the next settle


def _append_body(target: AppendTarget, chunk_size: int, sync: bool,
                 record_id: int) -> dict[str, Any]:
    lease = target.lease
    return {"handle": lease.handle, "version": lease.version,
            "secondaries": [s.addr for s in lease.secondaries], "chunk_size": chunk_size,
            "min_offset": target.min_offset, "sync": sync, "record_id": record_id}


class Appender:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.cfg = client.cfg
        self.targets: dict[int, AppendTarget] = {}
        self.extenders: dict[int, _Extender] = {}
        self.queues: dict[int, _Queue] = {}
        self.batches = 0               # queued batches sent (for tests and figures)
        self.appends = 0               # records committed (for tests and figures)
        self.paddings = 0              # next_chunk answers seen
        self.retries = 0               # failed attempts retried

    async def max_record(self) -> int:
        return await self.client.get_chunk_size() // 4

    async def append(self, ino: int, data: bytes | bytearray | memoryview,
                     sync: bool = False) -> int:
        """Append one record; its file offset. EINVAL when empty or larger
        than chunk_size/4; EIO when every attempt failed (the record may then
        be present on some replicas, or more than once)."""
        client = self.client
        cs = await client.get_chunk_size()
        payload = bytes(data)
        if not 0 < len(payload) <= cs // 4:
            raise GFSError(Code.EINVAL, f"a record is 1 to {cs // 4} bytes, not {len(payload)}")
        st = client.state(ino)
        if st.wbuf or st.inflight:      # our own earlier plain writes come first
            await client.writer.flush(ino)
        min_index = 0
        failures = 0
        paddings = 0
        last: GFSError | None = None
        record_id = secrets.randbits(63) or 1       # one for every attempt: lands once
        while True:
            target = await self._target(ino, min_index)
            lease = target.lease
            body = _append_body(target, cs, sync, record_id)
            try:
                if len(payload) <= INLINE_MAX:
                    body["data"] = payload
                else:
                    body["data_id"] = secrets.token_hex(16)
                    await client.writer.push(lease, body["data_id"], payload)
                reply = await rpc.call(client.http, lease.primary.addr, "append", body,
                                       timeout=self.client.chunkd_timeout, token=lease.token)
            except GFSError as exc:
                if exc.code not in RETRYABLE:
                    raise
                failures += 1
                self.retries += 1
                last = exc
                self._drop(ino, target)
                if failures >= max(1, self.cfg.retries):
                    raise GFSError(Code.EIO,
                                   f"inode {ino}: record append failed ({last})") from None
                await retry.MUTATION.pause(failures - 1, log, "append to inode %d chunk %d "
                                           "(try %d) failed: %s", ino, target.index, failures, exc)
                continue
            if reply.get("retry") == "next_chunk":
                self.paddings += 1
                paddings += 1
                if paddings > MAX_PADDED_CHUNKS:
                    raise GFSError(Code.EIO, f"inode {ino}: {paddings} chunks full in a row")
                self._drop(ino, target)
                min_index = target.index + 1
                continue
            break
        offset = target.index * cs + int(reply["offset"])
        if not sync:
            _, addrs = st.unsynced.setdefault(lease.handle, (target.index, set()))
            addrs.update(r.addr for r in (lease.primary, *lease.secondaries))
        st.gen += 1
        st.pending_end = max(st.pending_end, offset + len(payload))
        self.appends += 1
        self._extend_soon(ino, offset + len(payload))
        if sync:
            await self.settle(ino)
        return offset

    # ------------------------------------------------------------ queued appends

    async def enqueue(self, ino: int, data: bytes | bytearray | memoryview) -> None:
        """Queue one record (1 to chunk_size/4 bytes) for this inode's sender."""
        cs = await self.client.get_chunk_size()
        if not 0 < len(data) <= cs // 4:
            raise GFSError(Code.EINVAL, f"a record is 1 to {cs // 4} bytes, not {len(data)}")
        q = self.queues.setdefault(ino, _Queue())
        self._raise_pending(q)
        while q.bytes and q.bytes + len(data) > self.cfg.upload_chunk_size:
            await q.moved.wait()
            self._raise_pending(q)
        q.records.append(bytes(data))
        q.bytes += len(data)
        q.queued += 1
        self._start_sender(ino, q, cs // 4)

    def queued_bytes(self, ino: int) -> int:
        """Bytes queued for ``ino`` and not yet appended (queued or being sent)."""
        q = self.queues.get(ino)
        return 0 if q is None else q.bytes + q.sending

    async def drain(self, ino: int) -> None:
        """Wait until every record queued for ``ino`` before this call is
        appended (not those queued meanwhile: a reader never waits on busy
        writers for ever); a failed send is raised here once."""
        q = self.queues.get(ino)
        if q is None:
            return
        target = q.queued
        while q.done < target:
            if not q.running:           # a sender cancelled midway left some
                self._start_sender(ino, q, await self.client.get_chunk_size() // 4)
            await q.moved.wait()
        self._raise_once(q)
        if not q.running and not q.records and self.queues.get(ino) is q:
            del self.queues[ino]

    def _start_sender(self, ino: int, q: _Queue, limit: int) -> None:
        if not q.running:
            q.running = True
            self.client.nursery.start_soon(self._send_queue, ino, q, limit)

    @staticmethod
    def _raise_pending(q: _Queue) -> None:
        """A failed send refuses later records, and stays for the next drain
        (flush, fsync, close) to report: a write(2) cut short by it must not
        hide it from them."""
        if q.error is not None:
            raise GFSError(q.error.code, q.error.message)

    @staticmethod
    def _raise_once(q: _Queue) -> None:
        if q.error is not None:
            err, q.error = q.error, None
            raise err

    async def _send_queue(self, ino: int, q: _Queue, limit: int) -> None:
        """Send the queue in batches of at most ``limit`` bytes, in order."""
        try:
            while q.records:
                batch = [q.records.popleft()]
                size = len(batch[0])
                while q.records and size + len(q.records[0]) <= limit:
                    size += len(q.records[0])
                    batch.append(q.records.popleft())
                q.bytes -= size
                q.sending = size
                try:
                    await self.append(ino, b"".join(batch))
                    self.batches += 1
                except GFSError as exc:
                    log.error("queued appends to inode %d failed: %s", ino, exc)
                    q.error = exc
                    self.client.note_error(ino, exc)
                    q.done += len(q.records)        # dropped with it
                    q.records.clear()
                    q.bytes = 0
                    return
                finally:                # sent, failed or cancelled: not waited for again
                    q.done += len(batch)
                    q.sending = 0
                    q.moved.set()
                    q.moved = trio.Event()
        finally:
            q.running = False
            q.moved.set()
            q.moved = trio.Event()

    # ------------------------------------------------------------ lease of the last chunk

    async def _target(self, ino: int, min_index: int) -> AppendTarget:
        cached = self.targets.get(ino)
        if (cached is not None and cached.index >= min_index
                and cached.lease.expires_ns - LEASE_MARGIN_NS > time.time_ns()):
            return cached
        r: dict[str, Any] = await self.client.call("append_lease", {"ino": ino, "index": min_index})
        lease = Lease(int(r["handle"]), int(r["version"]), replica(r["primary"]),
                      tuple(replica(s) for s in r.get("secondaries", [])),
                      int(r["expires_ns"]), r.get("token"))
        target = AppendTarget(int(r["index"]), lease, int(r.get("min_offset", 0)))
        current = self.targets.get(ino)
        if current is None or current.index <= target.index:
            self.targets[ino] = target
        st = self.client.state(ino)
        st.gen += 1
        st.leases[target.index] = lease
        st.write_token = lease.token
        st.locs[target.index] = (ChunkLoc(lease.handle, lease.version,
                                          (lease.primary, *lease.secondaries), lease.token),
                                 time.monotonic() + self.cfg.location_timeout)
        return target

    def _drop(self, ino: int, target: AppendTarget) -> None:
        if self.targets.get(ino) is target:
            del self.targets[ino]
        self.client.writer.drop_lease(ino, target.index)

    def forget(self, ino: int) -> None:
        self.targets.pop(ino, None)
        ext = self.extenders.get(ino)
        if ext is not None and not ext.running and not ext.want:
            del self.extenders[ino]

    # ------------------------------------------------------------ size

    def _extend_soon(self, ino: int, end: int) -> None:
        ext = self.extenders.setdefault(ino, _Extender())
        ext.want = max(ext.want, end)
        if not ext.running:
            self._start(ino, ext)

    def _start(self, ino: int, ext: _Extender) -> None:
        ext.running = True
        ext.idle = trio.Event()
        self.client.nursery.start_soon(self._extend_loop, ino, ext)

    async def _extend_loop(self, ino: int, ext: _Extender) -> None:
        try:
            while ext.want:
                target, ext.want = ext.want, 0
                try:
                    attr = await self.client.call("extend", {"ino": ino, "size": target,
                                                             "mtime_ns": time.time_ns()})
                except GFSError as exc:
                    (log.warning if exc.code == Code.QUOTA else log.error)(
                        "extend of inode %d to %d failed: %s", ino, target, exc)
                    ext.want = max(ext.want, target)
                    ext.error = exc
                    self.client.note_error(ino, exc)
                    return
                st = self.client.state(ino)
                st.size = max(st.size, int(attr.get("size", target)))
        finally:
            ext.running = False
            ext.idle.set()

    async def settle(self, ino: int) -> None:
        """Wait until the master's size covers every record this client
        appended to ``ino``; raise a failed extend once."""
        ext = self.extenders.get(ino)
        while ext is not None and (ext.running or ext.want):
            if not ext.running:
                self._start(ino, ext)
            await ext.idle.wait()
            if ext.error is not None:
                err, ext.error = ext.error, None
                raise err
