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
``oplog.<D>``, fork (synchronously, so the child's copy of the namespace is
exactly the records up to S); the child writes ``checkpoint.<S>`` to a temp
file, fsyncs, renames, fsyncs the dir and exits while the master goes on
serving (:func:`_fork_writer`); only then are older checkpoints and logs
deleted. Without fork: the state is taken in the loop and written in a thread.

A failed write or fsync (ENOSPC, EIO): every record after ``durable_seq`` is
lost. The file is cut back to its durable size, ``on_failure`` (the master's
:func:`master.state.rollback.undo`) rebuilds the namespace from the durable records,
and only then is every waiter of a lost record answered ENOSPC (or EIO).
Sequence numbers are never reused, so a waiter can tell a lost record from a
later one. :meth:`OpLog.check_writable` refuses new records until
:meth:`OpLog.reopen` manages to checkpoint the durable state at ``last_seq``
(the lost numbers stay unused) and open a new log there. Actions that must not
happen for a lost record (deleting the chunks it freed) wait in
:meth:`OpLog.when_durable`.

Recovery (:mod:`master.state.logread`, read-only): the newest checkpoint that passes
its CRC, then every record with a larger sequence number from the logs in
order. Only a torn tail -- the last record of the newest log, short or failing
its CRC, with nothing valid after it -- is dropped (with a warning, and cut off
by :meth:`OpLog.start`). A bad record before the tail, in an older log file, a
gap in sequence numbers, or (checked by ``Master.open``) a record that does not
replay raise :class:`LogDamage` naming the file and byte offset; start-up
stops and the files stay as they are (``gfs-master --recover-log`` keeps a copy
and cuts there).
"""
from __future__ import annotations

import bisect
import ctypes
import errno
import gc
import logging
import os
import signal
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import trio

from gfsfs.common.errors import GFSError

from master.state.logread import (CKPT_PREFIX, HEADER, LOG_PREFIX, MAGIC, Loaded, LogDamage, load, numbered, read_checkpoint, read_log)

log = logging.getLogger(__name__)

__all__ = ["CKPT_PREFIX", "LOG_PREFIX", "LogDamage", "OpLog", "load", "read_checkpoint",
           "read_log"]

Record = dict[str, Any]


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def frame(seq: int, rec: Record) -> bytes:
    payload = pack([seq, rec])
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def record_crc(seq: int, rec: Record) -> int:
    """The CRC a record's frame carries: a shadow and its primary compare the
    CRC of the shadow's last record to find out whether their logs agree."""
    return zlib.crc32(pack([seq, rec]))


# durable records kept in memory for shadows to catch up from (master.ha.shipping);
# a shadow further behind takes a checkpoint
RECENT = 16384


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _write_checkpoint(data_dir: Path, seq: int, state: Any) -> Path:
    body = pack({"seq": seq, "state": state})
    tmp = data_dir / f"{CKPT_PREFIX}tmp"
    final = data_dir / f"{CKPT_PREFIX}{seq:016d}"
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<I", zlib.crc32(body)) + body)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)     # ENOSPC: do not keep half a checkpoint
        raise
    os.replace(tmp, final)
    fsync_dir(data_dir)
    return final


def _libc_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_prctl = _libc_prctl()
PR_SET_PDEATHSIG = 1


def _fork_writer(data_dir: Path, seq: int, snapshot: Callable[[], Any]) -> int:
    """Write the checkpoint in a child process: fork(2) gives it an immutable
    copy of the namespace (copy-on-write pages) at this instant, so the master
    keeps serving and mutating while the child serialises (GFS §2.6.3 builds
    checkpoints in a separate thread; a thread here would share the GIL and
    the mutating objects). The child's exit code is 0 or the errno."""
    parent = os.getpid()
    pid = os.fork()
    if pid != 0:
        return pid
    code = 255
    try:
        # a writer outliving a killed master could race the next one's checkpoint
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            raise OSError(errno.ECHILD, "the master went away")
        gc.disable()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _write_checkpoint(data_dir, seq, snapshot())
        code = 0
    except OSError as exc:
        code = exc.errno if exc.errno and 0 < exc.errno < 255 else 255
    finally:
        os._exit(code)


async def _wait_exit(pid: int) -> int:
    """The exit code of child ``pid``, waited for without blocking trio."""
    pidfd = -1
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pass
    try:
        if pidfd >= 0:
            await trio.lowlevel.wait_readable(pidfd)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            await trio.sleep(0.005)
    finally:
        if pidfd >= 0:
            os.close(pidfd)


WRITER_TIMEOUT = 1800.0     # seconds a checkpoint writer may take (10 M files: ~30 s)


async def _reap_writer(pid: int, data_dir: Path, timeout: float = WRITER_TIMEOUT) -> None:
    """Wait for checkpoint writer ``pid``; OSError with its errno if it failed,
    ETIMEDOUT if it hung (a child forked from a threaded process can): the
    next checkpoint tries again."""
    try:
        with trio.move_on_after(timeout) as waited:
            code = await _wait_exit(pid)
    except BaseException:           # cancelled: the half-written checkpoint goes
        _kill_writer(pid, data_dir)
        raise
    if waited.cancelled_caught:
        _kill_writer(pid, data_dir)
        raise OSError(errno.ETIMEDOUT, f"checkpoint writer hung for {timeout:g} s: killed")
    if code != 0:
        err = code if 0 < code < 255 else errno.EIO
        raise OSError(err, f"checkpoint writer failed: {os.strerror(err)}")


def _kill_writer(pid: int, data_dir: Path) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    (data_dir / f"{CKPT_PREFIX}tmp").unlink(missing_ok=True)


class OpLog:
    """Append-only, group-committed op log with checkpoints."""

    # write checkpoints in a forked child (False: snapshot in the request loop,
    # write in a thread -- the loop then stalls while the snapshot is taken)
    fork_checkpoints = hasattr(os, "fork") and hasattr(os, "waitstatus_to_exitcode")

    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.last_seq = 0            # last record appended (in memory)
        self.durable_seq = 0         # last record known to be on disk
        self.checkpoint_seq = 0      # the newest durable checkpoint
        self.fsyncs = 0
        # called with the seconds each group-commit write + fsync took (metrics)
        self.fsync_observers: list[Callable[[float], None]] = []
        # called (awaited, with the commit lock held) after a failed write, to
        # bring the in-memory state back to the durable records (Master)
        self.on_failure: Callable[[], Awaitable[None]] | None = None
        self.failed: GFSError | None = None   # set from a failed write until reopen()
        self.failures = 0                     # write/fsync failures since start
        self._lost: list[tuple[int, int, GFSError]] = []   # (after, upto, error)
        self._after: list[tuple[int, Callable[[], None]]] = []
        self._buf: list[bytes] = []
        # the newest records appended, oldest first (seq numbers rise, may skip
        # over records a failed write lost): what shadows follow from
        self.recent: list[tuple[int, Record]] = []
        self.last_crc: int | None = None      # record_crc of the last record appended
        self.appended = trio.Event()          # set (and replaced) by every append
        # awaited by commit() once a record is durable here: the wait for the
        # synchronous shadows (master.ha.shipping.Shipper.wait)
        self.remote: Callable[[int], Awaitable[None]] | None = None
        self._fd = -1
        self._log_start = 0
        self._log_size = 0           # bytes of the open log known to be durable
        self._io_lock = trio.Lock()
        self._ckpt_lock = trio.Lock()

    # ------------------------------------------------------------ recovery

    def load(self) -> Loaded:
        """The checkpoint and records to replay (read-only; :class:`LogDamage`
        if they cannot be replayed as they are). Then :meth:`start`."""
        loaded = load(self.dir)
        self.checkpoint_seq = loaded.checkpoint_seq
        self.last_seq = self.durable_seq = loaded.last_seq
        return loaded

    def start(self, loaded: Loaded) -> None:
        """Cut a torn tail off the newest log and open it (or a new one) for
        appending; call once, after the records replayed."""
        scan, last = loaded.newest, loaded.last_seq
        if scan is not None and loaded.newest_start <= last:
            if scan.torn_tail:
                log.warning("op log %s: dropping a torn or corrupt tail of %d bytes at offset "
                            "%d (after %d good records)", scan.path, scan.size - scan.end,
                            scan.end, len(scan.entries))
                os.truncate(scan.path, scan.end)
            self._log_start, self._log_size = loaded.newest_start, scan.end
            self._fd = os.open(scan.path, os.O_WRONLY | os.O_APPEND)
        else:
            self._open_new_log(last)
        self.recent = [(e.seq, e.rec) for e in loaded.entries[-RECENT:]]
        if self.recent:
            self.last_crc = record_crc(*self.recent[-1])
        log.info("op log: checkpoint at %d, %d records replayed, next seq %d",
                 self.checkpoint_seq, len(loaded.entries), last + 1)

    def _open_new_log(self, start: int) -> None:
        path = self.dir / f"{LOG_PREFIX}{start:016d}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fsync_dir(self.dir)
            size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._log_start, self._log_size = fd, start, size

    # ------------------------------------------------------------ appending

    def check_writable(self) -> None:
        """Raise ENOSPC/EIO while the log is unusable (before applying anything)."""
        if self.failed is not None:
            raise GFSError(self.failed.code, f"op log unusable: {self.failed.message}")

    def append(self, rec: Record) -> int:
        """Buffer ``rec`` (already applied in memory); its sequence number.
        Sequence numbers are never reused, not even after a failed write."""
        self.check_writable()
        self.last_seq += 1
        data = frame(self.last_seq, rec)
        self._buf.append(data)
        self.recent.append((self.last_seq, rec))
        if len(self.recent) > 2 * RECENT:
            del self.recent[:len(self.recent) - RECENT]
        self.appended.set()
        self.appended = trio.Event()
        self.last_crc = HEADER.unpack_from(data)[1]     # the frame's CRC: record_crc
        return self.last_seq

    def when_durable(self, seq: int, action: Callable[[], None]) -> None:
        """Run ``action`` once record ``seq`` is on disk; never if it is lost."""
        if seq <= self.durable_seq:
            action()
        else:
            self._after.append((seq, action))

    @property
    def since_checkpoint(self) -> int:
        return self.last_seq - self.checkpoint_seq

    def _raise_if_lost(self, seq: int) -> None:
        for after, upto, err in self._lost:
            if after < seq <= upto:
                raise GFSError(err.code, err.message)

    async def commit(self, seq: int) -> None:
        """Return once record ``seq`` (and all before it) is fsync'd -- and,
        with synchronous shadows, on their disks too (``remote``); raise
        ENOSPC/EIO if its write failed (it was then undone in memory)."""
        self._raise_if_lost(seq)
        if self.durable_seq < seq:
            async with self._io_lock:
                self._raise_if_lost(seq)
                if self.durable_seq < seq:
                    await self._flush_locked()
        if self.remote is not None:
            await self.remote(seq)

    def flush_sync(self) -> None:
        """Write and fsync the buffer, blocking (start-up only, before serving)."""
        data, upto = b"".join(self._buf), self.last_seq
        self._buf = []
        if data:
            _write_all(self._fd, data)
            self._log_size += len(data)
            self.fsyncs += 1
        self._durable(upto)

    def _durable(self, upto: int) -> None:
        self.durable_seq = upto
        if self._after and self._after[0][0] <= upto:
            ready = [a for s, a in self._after if s <= upto]
            self._after = [(s, a) for s, a in self._after if s > upto]
            for action in ready:
                action()

    async def _flush_locked(self) -> None:
        self.check_writable()
        data, upto = b"".join(self._buf), self.last_seq
        self._buf = []
        if data:
            with trio.CancelScope(shield=True):
                started = time.monotonic()
                try:
                    await trio.to_thread.run_sync(_write_all, self._fd, data)
                except OSError as exc:
                    err = await self._fail(exc)
                    raise GFSError(err.code, err.message) from None
            self._log_size += len(data)
            self.fsyncs += 1
            for observe in self.fsync_observers:
                observe(time.monotonic() - started)
        self._durable(upto)

    async def _fail(self, exc: OSError) -> GFSError:
        """A write or fsync failed: every record after ``durable_seq`` is lost.
        Cut the file back to its durable end, undo them in memory (on_failure)
        and refuse mutations until :meth:`reopen` succeeds."""
        code = "ENOSPC" if exc.errno == errno.ENOSPC else "EIO"
        err = GFSError(code, f"op log write failed: {exc}")
        self.failed = err
        self.failures += 1
        lost = (self.durable_seq, self.last_seq, err)
        self._buf, self._after = [], []
        # a shadow that has any of them must resync (the numbers are never reused)
        self.recent = [r for r in self.recent if r[0] <= self.durable_seq]
        self.last_crc = None
        log.critical("op log %s: write failed (%s); records %d..%d undone, refusing mutations "
                     "until the log can be written again", self._path(), exc,
                     self.durable_seq + 1, self.last_seq)
        self._cut_back()
        try:
            if self.on_failure is not None:
                await self.on_failure()
        finally:
            # only now: a waiter answered earlier could retry and still see
            # its undone record; until then they queue on the lock we hold
            self._lost.append(lost)
        return err

    def _path(self) -> Path:
        return self.dir / f"{LOG_PREFIX}{self._log_start:016d}"

    def _cut_back(self) -> bool:
        """Truncate the open log to its durable size; whether that worked."""
        try:
            os.ftruncate(self._fd, self._log_size)
            os.fsync(self._fd)
            return True
        except OSError as exc:
            log.error("op log %s: cannot cut back to %d bytes: %s", self._path(),
                      self._log_size, exc)
            return False

    async def reopen(self, snapshot: Callable[[], Any]) -> bool:
        """After a failure: checkpoint ``snapshot()`` (the durable state) at
        ``last_seq`` and start a new log there; mutations are accepted again
        if that worked. Returns whether it did."""
        async with self._ckpt_lock:
            async with self._io_lock:
                if self.failed is None:
                    return True
                seq = self.last_seq
                try:
                    await trio.to_thread.run_sync(self._reopen_sync, seq, snapshot())
                except OSError as exc:
                    log.warning("op log still unusable: %s", exc)
                    return False
                self.checkpoint_seq = self.durable_seq = seq
                self.failed = None
        log.warning("op log writable again: checkpoint at record %d, mutations accepted", seq)
        return True

    def _reopen_sync(self, seq: int, state: Any) -> None:
        if not self._cut_back():
            raise OSError(errno.EIO, "cannot cut the op log back")
        _write_checkpoint(self.dir, seq, state)
        if self._log_start != seq:
            self._open_new_log(seq)
        self._remove_old(seq, seq)

    # ------------------------------------------------------------ shadows

    def records_from(self, seq: int, limit: int = 2048) -> list[tuple[int, Record]] | None:
        """Up to ``limit`` records from ``seq`` on, durable or still in the
        group commit ([] if there are none yet), or None if record ``seq`` is
        no longer in memory (or was lost to a failed write)."""
        recent = self.recent
        if seq > self.last_seq:
            return []
        if not recent or seq < recent[0][0]:
            return None
        i = bisect.bisect_left(recent, seq, key=lambda r: r[0])
        if i == len(recent) or recent[i][0] != seq:
            return None                         # a number lost by a failed write
        return recent[i:i + limit]

    def checkpoint_file(self, seq: int) -> Path:
        return self.dir / f"{CKPT_PREFIX}{seq:016d}"

    def crc_at(self, seq: int) -> int | None:
        """record_crc of record ``seq``, if it is still in memory."""
        found = self.records_from(seq, 1)
        return record_crc(*found[0]) if found else None

    async def restart_at(self, seq: int, checkpoint: bytes, crc: int | None) -> None:
        """A shadow taking its primary's checkpoint (the bytes of a checkpoint
        file, record ``seq``): every local log and checkpoint goes, the
        checkpoint is written as ours, and appending resumes after ``seq``."""
        async with self._ckpt_lock:
            async with self._io_lock:
                await trio.to_thread.run_sync(self._restart_sync, seq, checkpoint)
                self.last_seq = self.durable_seq = self.checkpoint_seq = seq
                self._buf, self.recent, self._after = [], [], []
                self.last_crc = crc
                self.failed = None

    def _restart_sync(self, seq: int, checkpoint: bytes) -> None:
        tmp = self.dir / f"{CKPT_PREFIX}tmp"
        with open(tmp, "wb") as f:
            f.write(checkpoint)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / f"{CKPT_PREFIX}{seq:016d}")
        fsync_dir(self.dir)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for _s, path in numbered(self.dir, LOG_PREFIX):
            path.unlink()
        self._open_new_log(seq)
        self._remove_old(seq, seq)

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
                seq = self.last_seq
                if seq == self.checkpoint_seq and seq > 0:
                    return seq
                if self.fork_checkpoints:
                    pid = _fork_writer(self.dir, seq, snapshot)
                else:
                    state = snapshot()
            if self.fork_checkpoints:
                await _reap_writer(pid, self.dir)
            else:
                await trio.to_thread.run_sync(_write_checkpoint, self.dir, seq, state)
            self.checkpoint_seq = seq
            await trio.to_thread.run_sync(self._remove_old, seq, start)
            log.info("checkpoint at record %d written", seq)
            return seq

    def _remove_old(self, ckpt_seq: int, log_start: int) -> None:
        for seq, path in numbered(self.dir, CKPT_PREFIX):
            if seq < ckpt_seq:
                path.unlink(missing_ok=True)
        for start, path in numbered(self.dir, LOG_PREFIX):
            if start < log_start:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
