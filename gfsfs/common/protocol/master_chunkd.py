"""The master -> chunkd messages: chunk versions, deletions, re-replication and
snapshot copies.

master -> chunkd
----------------
``set_version {handle, version, [create: bool], [offset, data, sync]}`` -> ``{}``:
record the chunk's new version (before a lease grant); ``create`` makes the
chunk, empty or holding ``data`` (at most INLINE_MAX bytes) at ``offset``,
fsync'd when ``sync`` (a replica that cannot store the bytes deletes the chunk
and fails). A new chunk's files reach the disk with its first sync or version
change, not at creation. ``create`` of a handle the chunkd already holds (an
orphan left by a master that crashed before logging its allocation) empties
it first. The master always sends ``create`` (absent: false).

``delete {handles: [handle]}`` -> ``{}``: delete those replicas now. The master
itself never sends it (garbage goes out in the ``delete`` lists of its replies
to ``register``, ``heartbeat`` and ``report_chunks``); it is for tools.

``replicate {handle, version, source: addr}`` -> ``{"handle", "version", "length"}``:
re-replication (GFS §4.3). The target fetches the chunk from the chunkd at
``source`` with ``GET /chunk/<handle>?offset&length&version`` (the source
verifies the checksums), stores it under version 0 while copying (never current,
so a crash leaves only a stale replica) and takes ``version`` once every byte is
fsync'd; then it answers and reports the chunk as added. A stale copy already
there is replaced; one at ``version`` or newer answers at once. EAGAIN while a
copy of the same chunk is under way. The master records the location from the
reply only if the chunk's version is still ``version``; before copying a chunk
with a lease it revokes the lease and raises the version (``set_version``).
Throttled by ``[master] replication_per_chunkd`` and ``replication_max``.

``copy {handle, version, new_handle, new_version}`` -> ``{"handle", "version",
"length"}``: snapshot copy-on-write: copy chunk ``handle`` (which must be at
``version``: STALE otherwise) to ``new_handle`` on this chunkd, locally, under
the chunk's order lock, every block verified (CORRUPT as for a read); the copy
is at version 0 until fsync'd, then ``new_version``. Not reported as added (the
master records it from the reply). A copy already at ``new_version`` answers
at once; EAGAIN while the same copy is under way.

``set_versions {versions: [[handle, version], ...]}`` -> ``{"failed": [[handle,
code: str], ...]}``: many ``set_version`` (without ``create``) at once, each fsync'd
(a snapshot revoking the leases of a tree).

Fencing (docs/ha.md): every order carries the sending master's ``epoch``
(absent: 0). A chunkd remembers the highest epoch it has seen (in orders and in
the replies to its heartbeats, kept on disk) and answers an order from an
older epoch STALE without acting on it: an old primary that wakes up after a
failover can grant no lease and delete nothing.
"""
from __future__ import annotations

from typing import NotRequired, TypedDict

from gfsfs.common.protocol.shapes import Empty, HandleVersion, Message, Route, table

SENDER = "master"
SERVER = "chunkd"


class Fenced(TypedDict):
    epoch: NotRequired[int]         # the sending master's epoch; an older one is refused


class Chunk(Fenced):
    handle: int
    version: int


class SetVersionReq(Chunk):
    create: NotRequired[bool]
    # the first write, with create:
    data: NotRequired[bytes]        # at most INLINE_MAX bytes
    offset: NotRequired[int]
    sync: NotRequired[bool]


class DeleteReq(Fenced):
    handles: list[int]


class ReplicateReq(Chunk):
    source: str                     # the chunkd to copy from: "http://host:port"


class ChunkLength(TypedDict):
    """The replica made, and its length in bytes."""
    handle: int
    version: int
    length: int


class CopyReq(Chunk):
    new_handle: int
    new_version: int


class SetVersionsReq(Fenced):
    versions: list[HandleVersion]


class SetVersionsReply(TypedDict):
    failed: list[tuple[int, str]]   # [handle, error code]


MESSAGES: dict[str, Message] = table(
    Message("set_version", SetVersionReq, Empty,
            "a chunk's new version before a lease grant; create makes it"),
    Message("delete", DeleteReq, Empty, "delete replicas now (for tools)"),
    Message("replicate", ReplicateReq, ChunkLength,
            "fetch a chunk from another chunkd (re-replication)"),
    Message("copy", CopyReq, ChunkLength, "copy a chunk locally (snapshot copy-on-write)"),
    Message("set_versions", SetVersionsReq, SetVersionsReply,
            "many set_version at once (a snapshot's revocations)"),
)

ROUTES: list[Route] = []
