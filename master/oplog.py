"""The operation log and checkpoints (GFS §2.6.3).

Files in the data dir:

``oplog.<D>``       records with sequence numbers > D, each framed as
                    ``[u32 length][u32 zlib.crc32(payload)][payload]`` where the
                    payload is msgpack ``[seq, record]`` (little-endian header).
``checkpoint.<S>``  ``MAGIC [u32 crc32] msgpack {"seq": S, "state": ...}``: the
                    whole namespace after record S.

Group commit: :meth:`OpLog.append` only buffers (synchronously, right after the
record was applied in memory); :meth:`OpLog.commit` waits until the record is
on disk. Committers queue on one lock; whoever holds it writes *everything*
buffered so far with one write + one fsync, so one fsync serves every mutation
waiting at that moment.

Checkpoint: under the same lock, flush the current log, switch appends to a new
``oplog.<D>``, take the state (synchronously, so it is exactly the records up
to S), then write ``checkpoint.<S>`` to a temp file, fsync, rename, fsync the
dir, and only then delete older checkpoints and logs.

Recovery: the newest checkpoint that passes its CRC, then every record with a
larger sequence number from the logs in order. A torn or corrupt record ends a
log: the file is truncated there with a warning, and start-up continues.
"""
from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import trio

from gfsfs.errors import GFSError

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
MAGIC = b"GFSCKPT1"
LOG_PREFIX = "oplog."
CKPT_PREFIX = "checkpoint."

Record = dict[str, Any]


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def frame(seq: int, rec: Record) -> bytes:
    payload = pack([seq, rec])
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _numbered(data_dir: Path, prefix: str) -> list[tuple[int, Path]]:
    out = []
    for p in data_dir.iterdir():
        if p.name.startswith(prefix) and p.name[len(prefix):].isdigit():
            out.append((int(p.name[len(prefix):]), p))
    return sorted(out)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_log(path: Path) -> list[tuple[int, Record]]:
    """The valid records of one log file; a torn/corrupt tail is cut off."""
    data = path.read_bytes()
    pos, out = 0, []
    while pos < len(data):
        if len(data) - pos < HEADER.size:
            break
        length, crc = HEADER.unpack_from(data, pos)
        payload = data[pos + HEADER.size:pos + HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        try:
            seq, rec = unpack(payload)
        except Exception:
            break
        if not isinstance(seq, int) or not isinstance(rec, dict):
            break
        out.append((seq, rec))
        pos += HEADER.size + length
    if pos < len(data):
        log.warning("op log %s: dropping a torn or corrupt tail of %d bytes at offset %d "
                    "(after %d good records)", path, len(data) - pos, pos, len(out))
        os.truncate(path, pos)
    return out


def read_checkpoint(path: Path) -> tuple[int, Any]:
    data = path.read_bytes()
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise ValueError("bad magic")
    (crc,) = struct.unpack_from("<I", data, len(MAGIC))
    body = data[len(MAGIC) + 4:]
    if zlib.crc32(body) != crc:
        raise ValueError("CRC mismatch")
    obj = unpack(body)
    return obj["seq"], obj["state"]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _write_checkpoint(data_dir: Path, seq: int, state: Any) -> Path:
    body = pack({"seq": seq, "state": state})
    tmp = data_dir / f"{CKPT_PREFIX}tmp"
    final = data_dir / f"{CKPT_PREFIX}{seq:016d}"
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<I", zlib.crc32(body)) + body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(data_dir)
    return final


class OpLog:
    """Append-only, group-committed op log with checkpoints."""

    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.last_seq = 0            # last record appended (in memory)
        self.durable_seq = 0         # last record known to be on disk
        self.checkpoint_seq = 0      # the newest durable checkpoint
        self.fsyncs = 0
        # called with the seconds each group-commit write + fsync took (metrics)
        self.fsync_observers: list[Callable[[float], None]] = []
        self._buf: list[bytes] = []
        self._fd = -1
        self._log_start = 0
        self._io_lock = trio.Lock()
        self._ckpt_lock = trio.Lock()
        self._failed: BaseException | None = None

    # ------------------------------------------------------------ recovery

    def recover(self) -> tuple[Any | None, list[Record]]:
        """(checkpoint state or None, records to replay after it, in order).

        Opens the newest log for appending; call once, before anything else.
        """
        state, self.checkpoint_seq = None, 0
        for seq, path in reversed(_numbered(self.dir, CKPT_PREFIX)):
            try:
                self.checkpoint_seq, state = read_checkpoint(path)
                break
            except Exception as exc:
                log.warning("checkpoint %s unreadable (%s); trying an older one", path, exc)
        records: list[Record] = []
        last = self.checkpoint_seq
        logs = _numbered(self.dir, LOG_PREFIX)
        for start, path in logs:
            for seq, rec in read_log(path):
                if seq <= last:
                    continue
                if seq != last + 1:
                    log.warning("op log %s: records %d..%d missing", path, last + 1, seq - 1)
                records.append(rec)
                last = seq
        self.last_seq = self.durable_seq = last
        if logs and logs[-1][0] <= last:
            self._log_start = logs[-1][0]
            self._fd = os.open(logs[-1][1], os.O_WRONLY | os.O_APPEND)
        else:
            self._open_new_log(last)
        log.info("op log: checkpoint at %d, %d records replayed, next seq %d",
                 self.checkpoint_seq, len(records), last + 1)
        return state, records

    def _open_new_log(self, start: int) -> None:
        path = self.dir / f"{LOG_PREFIX}{start:016d}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        fsync_dir(self.dir)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._log_start = fd, start

    # ------------------------------------------------------------ appending

    def append(self, rec: Record) -> int:
        """Buffer ``rec`` (already applied in memory); its sequence number."""
        self.last_seq += 1
        self._buf.append(frame(self.last_seq, rec))
        return self.last_seq

    @property
    def since_checkpoint(self) -> int:
        return self.last_seq - self.checkpoint_seq

    async def commit(self, seq: int) -> None:
        """Return once record ``seq`` (and all before it) is fsync'd."""
        if self.durable_seq >= seq:
            return
        async with self._io_lock:
            if self.durable_seq < seq:
                await self._flush_locked()

    def flush_sync(self) -> None:
        """Write and fsync the buffer, blocking (start-up only, before serving)."""
        data, upto = b"".join(self._buf), self.last_seq
        self._buf = []
        if data:
            _write_all(self._fd, data)
            self.fsyncs += 1
        self.durable_seq = upto

    async def _flush_locked(self) -> None:
        if self._failed is not None:
            raise GFSError("EIO", f"op log unusable since an earlier failure: {self._failed}")
        data, upto = b"".join(self._buf), self.last_seq
        self._buf = []
        if data:
            with trio.CancelScope(shield=True):
                started = time.monotonic()
                try:
                    await trio.to_thread.run_sync(_write_all, self._fd, data)
                except OSError as exc:
                    self._failed = exc
                    log.critical("op log write failed: %s; refusing all mutations", exc)
                    raise GFSError("EIO", f"op log write failed: {exc}") from None
            self.fsyncs += 1
            for observe in self.fsync_observers:
                observe(time.monotonic() - started)
        self.durable_seq = upto

    # ------------------------------------------------------------ checkpoints

    async def checkpoint(self, snapshot: Callable[[], Any]) -> int:
        """Write a checkpoint of ``snapshot()``; returns its sequence number."""
        async with self._ckpt_lock:
            async with self._io_lock:
                await self._flush_locked()
                start = self.durable_seq
                if start != self._log_start:
                    self._open_new_log(start)
                # no await from here: the state is exactly the records up to seq
                seq, state = self.last_seq, snapshot()
            if seq == self.checkpoint_seq and seq > 0:
                return seq
            await trio.to_thread.run_sync(_write_checkpoint, self.dir, seq, state)
            self.checkpoint_seq = seq
            await trio.to_thread.run_sync(self._remove_old, seq, start)
            log.info("checkpoint at record %d written", seq)
            return seq

    def _remove_old(self, ckpt_seq: int, log_start: int) -> None:
        for seq, path in _numbered(self.dir, CKPT_PREFIX):
            if seq < ckpt_seq:
                path.unlink(missing_ok=True)
        for start, path in _numbered(self.dir, LOG_PREFIX):
            if start < log_start:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
