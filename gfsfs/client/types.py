"""What the client's halves share: chunk locations, replicas, write leases,
the per-inode state, and which failures are worth another try.

:mod:`gfsfs.client.core` (reads, namespace), :mod:`gfsfs.client.write` and
:mod:`gfsfs.client.append` all import these from here, so none of them needs
another for its types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from gfsfs.client.chunkio import Batch, WriteBuffer
from gfsfs.common.errors import Code, GFSError

Ctx = dict[str, Any]     # the caller for the master: uid, gid and gids (supplementary groups)
Attr = dict[str, Any]    # an inode's attributes as the master answers them

# Chunkd/master failures worth another try (elsewhere, or with fresh locations).
RETRYABLE = frozenset({Code.STALE, Code.NOCHUNK, Code.UNAVAILABLE, Code.CORRUPT, Code.INTERNAL,
                       Code.EIO, Code.EAGAIN, Code.TOOBIG})
BATCHES_IN_FLIGHT = 4    # write batches of one inode sent at once (memory: 4 x upload_chunk_size)


@dataclass(frozen=True)
class Replica:
    id: str
    addr: str


def replica(raw: dict[str, Any]) -> Replica:
    """A replica as the master describes it (``{"id": ..., "addr": ...}``)."""
    return Replica(str(raw.get("id", "")), str(raw["addr"]).rstrip("/"))


@dataclass(frozen=True)
class ChunkLoc:
    handle: int
    version: int
    replicas: tuple[Replica, ...]
    token: str | None = None     # the master's chunk token (None: an open cluster)


@dataclass(frozen=True)
class Lease:
    handle: int
    version: int
    primary: Replica
    secondaries: tuple[Replica, ...]
    expires_ns: int
    token: str | None = None     # the master's write token for the chunk (None: open cluster)


@dataclass
class InodeState:
    """What this client knows and holds about one inode."""
    locs: dict[int, tuple[ChunkLoc | None, float]] = field(default_factory=dict)
    size: int = -1                    # file size from the master (-1 = unknown)
    leases: dict[int, Lease] = field(default_factory=dict)
    wbuf: WriteBuffer = field(default_factory=WriteBuffer)
    inflight: list[Batch] = field(default_factory=list)   # batches being sent, oldest first
    slots: trio.Semaphore = field(default_factory=lambda: trio.Semaphore(BATCHES_IN_FLIGHT))
    pending_end: int = 0              # end of data written but not yet extended
    error: GFSError | None = None     # a failed background write, reported once
    # every failure of a background write, append or extend of this inode
    # (Linux's errseq_t): each open file reports those since it last did at
    # its fsync, and at a flush (close) those since its last fsync
    err_seq: int = 0
    err_last: GFSError | None = None
    # handle -> (chunk index, replica addrs not yet fsync'd)
    unsynced: dict[int, tuple[int, set[str]]] = field(default_factory=dict)
    write_token: str | None = None    # the newest lease's chunk token: what a sync shows
    ctx: Ctx | None = None            # an export session's: the caller who last opened it
    # bumped by every local change of the data or its layout: a buffered
    # write, a lease (new chunk locations), an extend, an append, a truncate
    # (at its start and at its end). What is fetched from the cluster is
    # cached only if gen did not move while it was fetched (docs/consistency.md).
    gen: int = 0

    def busy(self) -> bool:
        return bool(self.wbuf or self.inflight or self.unsynced or self.error)
