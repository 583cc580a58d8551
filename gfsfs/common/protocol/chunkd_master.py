"""The chunkd -> master messages: a chunkd introduces itself, keeps in touch and
reports its chunks.

chunkd -> master
----------------
``register {id, addr, [rack], capacity_bytes, used_bytes, free_bytes, [chunks:
[[handle, version], ...]], [protocol]}`` -> ``{"heartbeat_interval": float,
"delete": [handle], "protocol": int}``: at start-up and whenever a heartbeat
answers ``reregister``. ``rack`` is "default" when absent; the chunkd always
sends its ``chunks`` (none: an empty list). PROTOCOL (400) when ``protocol``
is not the master's (see "Version" in :mod:`gfsfs.common.protocol`); the
chunkd logs that as an ERROR and keeps retrying.

``heartbeat {id, capacity_bytes, used_bytes, free_bytes, [chunk_count],
[extend: [handle]]}`` -> ``{"delete": [handle], "reregister": bool,
"extended": [handle]}``. A chunkd not heard from for
``dead_after_heartbeats`` intervals is dead; its replicas are forgotten.
``extend`` (GFS §3.1: extensions ride on heartbeats): the chunks this chunkd
committed or appended to as primary since its previous heartbeat. The master
extends to ``lease_seconds`` from now each lease that is still valid and held
by this chunkd, and lists those under ``extended``; a lapsed or moved lease is
never revived (no version change happens here).

``report_chunks {id, [added: [[handle, version]]], [removed: [handle]],
[corrupt: [handle]]}`` -> ``{"delete": [handle]}``: incremental changes.
``corrupt`` replicas (found by a read or by the background scrubber at
``[chunk_server] scrub_bytes_per_sec``) are already deleted by the chunkd; the
master re-replicates the chunk. Replicas beyond a chunk's goal are removed
through the ``delete`` list of ``heartbeat`` replies (fullest chunkd first).

Several masters (docs/ha.md): a chunkd registers and heartbeats with every
master in ``[chunk_server] master_url`` (comma-separated), so shadows know
where replicas are. Every reply carries the master's ``epoch`` and whether it
is the ``primary``; a chunkd acts on ``delete``, ``extended`` and
``reregister`` only from a primary whose epoch is the highest it has seen (a
shadow always answers empty lists).
"""
from __future__ import annotations

from typing import NotRequired, TypedDict

from gfsfs.common.protocol.shapes import HandleVersion, Message, Route, table

SENDER = "chunkd"
SERVER = "master"


class Space(TypedDict):
    """Who is talking and its disk space."""
    id: str                         # the chunkd's id
    capacity_bytes: int
    used_bytes: int
    free_bytes: int


class RegisterReq(Space):
    addr: str                       # "http://host:port"
    rack: NotRequired[str]          # "default" when absent
    chunks: NotRequired[list[HandleVersion]]    # every replica it holds
    protocol: NotRequired[int]      # PROTOCOL_VERSION; absent = 1


class Role(TypedDict):
    """Who answered: act on the reply only if ``primary`` with the highest epoch."""
    epoch: int
    primary: bool


class RegisterReply(Role):
    heartbeat_interval: float       # seconds
    delete: list[int]               # handles to delete
    protocol: int


class HeartbeatReq(Space):
    chunk_count: NotRequired[int]
    # the highest epoch this chunkd has seen and that epoch's primary: a master
    # of an older epoch learns it was superseded (docs/ha.md)
    epoch: NotRequired[int]
    primary_url: NotRequired[str]
    extend: NotRequired[list[int]]  # chunks it committed to as primary lately


class HeartbeatReply(Role):
    delete: list[int]
    reregister: bool
    extended: list[int]             # the leases of ``extend`` extended


class ReportChunksReq(TypedDict):
    id: str
    added: NotRequired[list[HandleVersion]]
    removed: NotRequired[list[int]]
    corrupt: NotRequired[list[int]]     # found corrupt, deleted already


class ReportChunksReply(Role):
    delete: list[int]


MESSAGES: dict[str, Message] = table(
    Message("register", RegisterReq, RegisterReply,
            "at start-up, and when a heartbeat answers reregister"),
    Message("heartbeat", HeartbeatReq, HeartbeatReply,
            "every heartbeat_interval; carries lease extensions"),
    Message("report_chunks", ReportChunksReq, ReportChunksReply,
            "replicas added, removed or found corrupt since the last report"),
)

ROUTES: list[Route] = []
