"""Reading op log files strictly: good records, a droppable torn tail, or damage.

A log file is a run of frames ``[u32 length][u32 crc32(payload)][payload]``
(see :mod:`master.state.oplog`). :func:`scan_log` reads one file without changing
it. Where a frame is short, fails its CRC or does not decode, the scan stops;
what that means depends on where it happens:

* a **torn tail**: the bad frame is in the newest log file and no decodable
  frame starts anywhere after it -- the write of the last group commit was
  cut short by a crash. It is dropped (with a warning) at start-up.
* anything else is **damage** (:class:`LogDamage`, naming the file and byte
  offset): a bad frame with a good one after it, or in an older log file.
  Start-up stops; ``gfs-master --recover-log`` keeps a copy and cuts there.
"""
from __future__ import annotations

import gc
import logging
import os
import shutil
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")

Record = dict[str, Any]


class LogDamage(Exception):
    """The op log cannot be replayed as it is: ``path`` is bad at ``offset``."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"op log {path} is damaged at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


@dataclass
class Entry:
    """One good record and where it is."""
    seq: int
    rec: Record
    path: Path
    offset: int


@dataclass
class Scan:
    """What :func:`scan_log` found in one file."""
    path: Path
    size: int
    entries: list[Entry] = field(default_factory=list)
    end: int = 0                      # offset after the last good frame
    problem: str | None = None        # why the scan stopped before ``size``
    later_frame: int | None = None    # offset of a good frame after ``end``, if any

    @property
    def clean(self) -> bool:
        return self.end == self.size

    @property
    def torn_tail(self) -> bool:
        """Bad bytes at the end with nothing valid after them."""
        return not self.clean and self.later_frame is None


def _decode(data: bytes | memoryview, pos: int) -> tuple[int, Record, int] | str:
    """(seq, record, frame length) of the frame at ``pos``, or why it is bad."""
    if len(data) - pos < HEADER.size:
        return "short frame header"
    length, crc = HEADER.unpack_from(data, pos)
    start = pos + HEADER.size
    if length > len(data) - start:
        return f"frame of {length} bytes runs past the end of the file"
    payload = bytes(data[start:start + length])
    if zlib.crc32(payload) != crc:
        return "CRC mismatch"
    try:
        seq, rec = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:
        return "payload does not decode"
    if not isinstance(seq, int) or not isinstance(rec, dict):
        return "payload is not [seq, record]"
    return seq, rec, HEADER.size + length


def _next_frame(data: bytes, pos: int) -> int | None:
    """The first offset after ``pos`` where a decodable frame starts."""
    view = memoryview(data)
    for p in range(pos + 1, len(data) - HEADER.size + 1):
        length, _crc = HEADER.unpack_from(view, p)
        # a record is at least [seq, {}] (3 bytes): runs of zeros are skipped fast
        if 3 <= length <= len(data) - p - HEADER.size and not isinstance(_decode(view, p), str):
            return p
    return None


def scan_log(path: Path) -> Scan:
    """Read ``path`` (never changing it) up to its first bad frame."""
    data = path.read_bytes()
    scan = Scan(path, len(data))
    pos = 0
    while pos < len(data):
        got = _decode(data, pos)
        if isinstance(got, str):
            scan.problem = got
            scan.later_frame = _next_frame(data, pos)
            break
        seq, rec, size = got
        scan.entries.append(Entry(seq, rec, path, pos))
        pos += size
    scan.end = pos
    return scan


def check_scan(scan: Scan, newest: bool) -> None:
    """Raise :class:`LogDamage` unless ``scan`` is clean or ends in a torn
    tail of the newest log file."""
    if scan.clean:
        return
    if not newest:
        raise LogDamage(scan.path, scan.end, f"{scan.problem} in a log file that is not "
                        "the newest (only the newest may end in a torn write)")
    if scan.later_frame is not None:
        raise LogDamage(scan.path, scan.end, f"{scan.problem}, with a valid record after it "
                        f"at offset {scan.later_frame} (not a torn tail)")


def read_log(path: Path) -> list[tuple[int, Record]]:
    """The records of one log file, ignoring a torn tail; raises
    :class:`LogDamage` for damage before the tail. Read-only."""
    scan = scan_log(path)
    check_scan(scan, newest=True)
    return [(e.seq, e.rec) for e in scan.entries]


# ------------------------------------------------------------ checkpoint + logs

MAGIC = b"GFSCKPT1"
LOG_PREFIX = "oplog."
CKPT_PREFIX = "checkpoint."


def numbered(data_dir: Path, prefix: str) -> list[tuple[int, Path]]:
    out = []
    for p in data_dir.iterdir():
        if p.name.startswith(prefix) and p.name[len(prefix):].isdigit():
            out.append((int(p.name[len(prefix):]), p))
    return sorted(out)


def read_checkpoint(path: Path) -> tuple[int, Any]:
    return read_checkpoint_bytes(path.read_bytes())


def read_checkpoint_bytes(data: bytes) -> tuple[int, Any]:
    """(seq, state) of a checkpoint file's bytes; ValueError if they are bad."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise ValueError("bad magic")
    (crc,) = struct.unpack_from("<I", data, len(MAGIC))
    body = data[len(MAGIC) + 4:]
    if zlib.crc32(body) != crc:
        raise ValueError("CRC mismatch")
    was = gc.isenabled()
    gc.disable()            # millions of small lists: no collection walking them all
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    finally:
        if was:
            gc.enable()
    return obj["seq"], obj["state"]


@dataclass
class Loaded:
    """The durable state in a data dir: checkpoint + the records after it."""
    checkpoint_seq: int = 0
    state: Any | None = None
    entries: list[Entry] = field(default_factory=list)
    last_seq: int = 0
    newest: Scan | None = None          # the newest log file
    newest_start: int = 0               # ... and the number in its name


def _newest_checkpoint(data_dir: Path, out: Loaded) -> None:
    for _seq, path in reversed(numbered(data_dir, CKPT_PREFIX)):
        try:
            out.checkpoint_seq, out.state = read_checkpoint(path)
            return
        except Exception as exc:
            log.warning("checkpoint %s unreadable (%s); trying an older one", path, exc)


def _take(out: Loaded, entry: Entry, upto: int | None) -> bool:
    """Add ``entry`` if it follows the records so far; False past ``upto``."""
    if entry.seq <= out.last_seq and out.last_seq == out.checkpoint_seq:
        return True                         # covered by the checkpoint
    if upto is not None and entry.seq > upto:
        return False
    if entry.seq != out.last_seq + 1:
        what = "the checkpoint" if out.last_seq == out.checkpoint_seq else "the record before"
        raise LogDamage(entry.path, entry.offset,
                        f"sequence gap: record {entry.seq} follows {what} at {out.last_seq} "
                        f"(expected {out.last_seq + 1})")
    out.entries.append(entry)
    out.last_seq = entry.seq
    return True


def load(data_dir: Path, upto: int | None = None) -> Loaded:
    """The newest readable checkpoint and every record after it (up to
    ``upto``), read-only. Raises :class:`LogDamage` for damage anywhere but a
    torn tail of the newest log, and for a gap in sequence numbers."""
    out = Loaded()
    _newest_checkpoint(data_dir, out)
    out.last_seq = out.checkpoint_seq
    logs = numbered(data_dir, LOG_PREFIX)
    for i, (start, path) in enumerate(logs):
        scan = scan_log(path)
        check_scan(scan, newest=i == len(logs) - 1)
        out.newest, out.newest_start = scan, start
        for entry in scan.entries:
            if not _take(out, entry, upto):
                return out
    return out


def keep_damaged(damage: LogDamage) -> list[Path]:
    """``--recover-log``: copy the damaged file to ``<name>.damaged-<time>``,
    cut it at the damage, and set every newer log file aside the same way
    (its records would follow a gap). The copies made."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    data_dir = damage.path.parent
    kept = []
    copy = damage.path.with_name(f"{damage.path.name}.damaged-{stamp}")
    shutil.copy2(damage.path, copy)
    kept.append(copy)
    with open(damage.path, "r+b") as f:
        f.truncate(damage.offset)
        f.flush()
        os.fsync(f.fileno())
    later = [p for _s, p in numbered(data_dir, LOG_PREFIX) if p.name > damage.path.name]
    for path in later:
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        os.replace(path, aside)
        kept.append(aside)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return kept
