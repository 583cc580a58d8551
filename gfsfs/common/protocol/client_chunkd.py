"""The client -> chunkd messages (the data plane), and what one chunkd sends
another.

client -> chunkd  (data plane)
------------------------------
``PUT /data/<data_id>`` raw body, header ``X-GFS-Chain: addr2,addr3`` (the rest
of the chain, possibly empty) -> msgpack ``{"length": int}``. The chunkd keeps
the bytes under ``data_id`` (a client-made random hex id) for
``push_buffer_ttl`` seconds and streams them on to the next address in the
chain (with the same Content-Length) while they arrive; it answers when its own
copy and the whole rest of the chain have them. Before reading the body it
reserves room for it in its push buffers (``push_buffer_bytes`` in all); a push
that finds none for ``push_buffer_wait`` seconds gets EAGAIN (503; retry).

``POST /rpc/commit {handle, version, offset, data_id | data, [secondaries: [addr]],
[sync: bool]}`` at the primary -> ``{"length": int}``: under the chunk's lock
the primary applies the pushed data at ``offset`` (CRC32C of touched 64 KiB
blocks recomputed), then sends ``apply`` with the same fields to every secondary
and answers when all have applied. A write of at most ``INLINE_MAX`` bytes may
skip the push and carry its bytes in ``data`` (bin) instead of ``data_id``: for
small files the push chain's extra round trips cost more than the bytes.
``sync`` fsyncs every replica first.
Errors: STALE when ``version`` differs from the replica's, NOCHUNK, ENOSPC,
UNAVAILABLE (a secondary failed: the message names it).

``POST /rpc/append {handle, version, chunk_size, [min_offset], [secondaries:
[addr]], data_id | data, [sync]}`` at the primary -> ``{"offset": int,
"length": int}`` or ``{"retry": "next_chunk", "padded": int}``: record append
(GFS §3.3). The record is the bytes pushed under ``data_id`` or, for small
records, ``data`` (bin) in the message itself; 1 to ``chunk_size/4`` bytes
(EINVAL otherwise). Under the chunk's order lock the primary takes offset =
max(its chunk length, ``min_offset``). If the record does not fit below
``chunk_size`` it pads its chunk with zeros to ``chunk_size`` and sends
``truncate`` to ``chunk_size`` to every secondary (also when it was full
already), and answers ``next_chunk`` (``padded``: bytes of padding it added):
the client asks ``append_lease`` for ``index + 1``. Otherwise it applies the
record at that offset and sends ``apply`` with the same offset (and ``data``
inline when it got it inline) to every secondary; it answers when all have
applied. Errors as for ``commit``; on UNAVAILABLE the record may be on the
primary and some secondaries. ``record_id`` (random, the same on every attempt
of one record) makes the retry land once: a primary that applied that record
already (itself, or as a secondary of an earlier primary) re-sends ``apply`` of
the same bytes at the same offset to its secondaries and answers that offset
(chunkd/mutations/records.py); without it the retry appends a duplicate.

``POST /rpc/apply {handle, version, offset, data_id, [sync], [record_id]}`` -> ``{"length":
int}``: primary -> secondary (only a chunkd sends it), the same mutation in
the primary's order. Instead of ``data_id`` it may carry ``data`` (bin): the
bytes themselves (small writes and small record appends).

``POST /rpc/truncate {handle, version, length, [secondaries: [addr]]}`` at the
primary -> ``{}``: cut the chunk to ``length`` bytes on every replica (forwarded
as ``truncate`` without secondaries).

``POST /rpc/sync {handles: [handle], [relay: addr]}`` -> ``{}``: fsync(2) those
chunk files; with ``relay``, pass the sync on to the chunkd at ``relay`` instead
(for a client that cannot reach it itself).

``GET /chunk/<handle>?offset=O&length=N&version=V`` -> raw bytes, at most N,
fewer if the chunk file is shorter (the reader pads with zeros up to the file
size it got from the master). Every 64 KiB block touched is verified against
its CRC32C first: a mismatch answers CORRUPT and is reported to the master.
STALE when the replica's version is older than V, NOCHUNK when unknown.

``GET /status`` -> msgpack ``{"id", "addr", "rack", "protocol", "chunks",
"capacity_bytes", "used_bytes", "free_bytes", push buffer and read counters,
"fsyncs", "master_url", "epoch", "primary_url", "stale_orders", "masters"}``:
``epoch`` is the highest master epoch the chunkd has seen and ``primary_url``
that epoch's primary ("" until a primary's reply names it); ``stale_orders``
the master orders refused STALE for an older epoch; ``masters`` one entry per
master of ``master_url`` (``reachable``, ``role``: "primary", "shadow",
"stale" (a primary of an older epoch) or "unknown", its ``epoch``,
``last_heartbeat``: when it last answered, Unix seconds, 0 = never).
``GET /metrics``: Prometheus text (:mod:`chunkd.api.metrics`).

Short-circuit reads (same host only; gfsfs/common/shortcircuit.py): on the abstract
Unix socket ``"\\0gfsfs-chunkd " + addr``, framed msgpack (u32 length prefix)
``{"handle", "version"}`` -> ``{"id", "version"}`` with the chunk's data and
meta file descriptors attached (SCM_RIGHTS), or ``{"code", "message"}``.

chunkd -> chunkd  (forwards; here, as they are client messages passed on)
--------------------------------------------------------------------------
A chunkd sends another only messages of this module, so they live here rather
than in a module of their own (``FORWARDS`` names them): ``apply`` (primary to
each secondary, after ``commit`` or ``append``), ``truncate`` without
``secondaries`` (the primary's forward, also the padding of a record append
that does not fit), ``sync`` without ``relay`` (a relayed sync), the push
chain's ``PUT /data/<data_id>`` to the next address, and re-replication's
``GET /chunk/<handle>`` from the source (the target of ``replicate``).
"""
from __future__ import annotations

from typing import NotRequired, TypedDict

from gfsfs.common.protocol.shapes import Empty, Message, Route, table

SENDER = "client"
SERVER = "chunkd"


class Chunk(TypedDict):
    handle: int
    version: int                    # the replica's must be this (STALE otherwise)


class Payload(TypedDict):
    """The bytes of a mutation: pushed under ``data_id``, or inline in ``data``."""
    data_id: NotRequired[str]       # the PUT /data/<data_id> id; without data
    data: NotRequired[bytes]        # at most INLINE_MAX bytes; instead of data_id
    sync: NotRequired[bool]         # fsync every replica


class CommitReq(Chunk, Payload):
    offset: int
    secondaries: NotRequired[list[str]]     # their addrs


class Length(TypedDict):
    length: int                     # bytes written


class AppendReq(Chunk, Payload):
    chunk_size: int
    min_offset: NotRequired[int]    # the primary appends no lower
    secondaries: NotRequired[list[str]]
    record_id: NotRequired[int]     # the same on every attempt: a retry lands once


class AppendReply(TypedDict, total=False):
    """Appended: ``offset`` and ``length``; or did not fit: ``retry`` is
    ``"next_chunk"`` and ``padded`` the zeros added."""
    offset: int
    length: int
    retry: str
    padded: int


class ApplyReq(Chunk, Payload):
    offset: int
    record_id: NotRequired[int]     # a record append's: remembered with its offset


class TruncateReq(Chunk):
    length: int
    secondaries: NotRequired[list[str]]


class SyncReq(TypedDict):
    handles: list[int]
    relay: NotRequired[str]         # pass it on to the chunkd at this addr


class MasterState(TypedDict):
    """One master, as a chunkd sees it."""
    url: str
    reachable: bool                 # its last round answered
    role: str                       # "primary", "shadow", "stale" or "unknown"
    primary: bool                   # role == "primary": its deletes are obeyed
    epoch: int                      # from its last reply
    last_heartbeat: float           # Unix seconds of its last answered round; 0 = never
    failures: int                   # rounds failed in a row


class ChunkdStatus(TypedDict):
    """``GET /status``."""
    id: str
    addr: str
    rack: str
    protocol: int
    chunks: int
    capacity_bytes: int
    used_bytes: int
    free_bytes: int
    push_buffers: int
    push_bytes: int
    push_reserved_bytes: int
    reads: int                      # GET /chunk requests answered
    local_opens: int                # chunk files handed to short-circuit readers
    fsyncs: int
    master_url: str                 # as configured: the masters, comma-separated
    epoch: int                      # the highest master epoch seen
    primary_url: str                # that epoch's primary ("" = not known yet)
    stale_orders: int               # master orders refused STALE (older epoch)
    masters: list[MasterState]


MESSAGES: dict[str, Message] = table(
    Message("commit", CommitReq, Length, "a write, at the primary: here, then apply"),
    Message("append", AppendReq, AppendReply, "a record append, at the primary"),
    Message("apply", ApplyReq, Length, "primary -> secondary: the mutation, in order"),
    Message("truncate", TruncateReq, Empty, "cut a chunk on every replica"),
    Message("sync", SyncReq, Empty, "fsync chunk files, or relay that"),
)

# what one chunkd sends another: names in MESSAGES (apply only ever from a
# chunkd), and route keys of ROUTES
FORWARDS = ("apply", "truncate", "sync")
FORWARD_ONLY = ("apply",)
FORWARD_ROUTES = ("PUT /data/", "GET /chunk/")

ROUTES: list[Route] = [
    Route("PUT", "/data/<data_id>", "push: buffered, forwarded down X-GFS-Chain", Length),
    Route("GET", "/chunk/<handle>?offset=O&length=N&version=V", "verified chunk bytes"),
    Route("GET", "/status", "the chunkd's state (msgpack)", ChunkdStatus),
    Route("GET", "/metrics", "Prometheus text (chunkd.api.metrics)"),
]
