"""The client -> master messages (a mount, :class:`gfsfs.client.core.Client`, the
``gfs`` CLI, the web page's own client), and the master's raw routes.

client -> master  (namespace; master checks POSIX permissions against ctx)
-------------------------------------------------------------------------
===============  ===========================================  =====================
rpc              request fields                               reply
===============  ===========================================  =====================
lookup           parent, name                                 Attr
getattr          ino                                          Attr
setattr          ino, [mode, uid, gid, size, atime_ns,        Attr
                 mtime_ns] (absent = unchanged),
                 [write_handle: bool] (ftruncate: the change
                 comes through a descriptor open for writing)
create           parent, name, mode, uid, gid, [rdev]         Attr  (EEXIST if name
                 (regular files, fifos, sockets: mknod)             exists)
mkdir            parent, name, mode, uid, gid                 Attr
symlink          parent, name, target, uid, gid               Attr
link             ino, parent, name                            Attr
unlink           parent, name                                 {"parent_attr"}
rmdir            parent, name                                 {"parent_attr"}
rename           parent, name, new_parent, new_name,          {}
                 [flags: 0 | 1 NOREPLACE | 2 EXCHANGE]
readdir          ino, offset (0 = start), [limit]             {"entries": [[name, Attr,
                                                              next_offset], ...]}
                 offsets are per-directory cookies stable under concurrent change
readlink         ino                                          {"target": bytes}
setxattr         ino, name, value, [flags: 1 CREATE|2 REPLACE]  {}
getxattr         ino, name                                    {"value": bytes}
                                                              (ENODATA if absent)
listxattr        ino                                          {"names": [bytes]}
removexattr      ino, name                                    {}
statfs           [protocol], [ino] (default: the root)        {"total_bytes", "free_bytes",
                                                              "used_bytes", "files",
                                                              "chunk_size", "chunkds",
                                                              "protocol", ["quota"]}
===============  ===========================================  =====================

Every request in this table but ``statfs`` may carry ``[ctx]``; ``getattr``,
``readlink`` and ``listxattr`` need no permission and ignore it.

Replies to create, mkdir, symlink, link, unlink and rmdir also carry
``"parent_attr"``: the directory's Attr after the change, which the client
gives the kernel's next getattr of it (the kernel drops its copy on every
change) instead of asking again.

client -> master  (export sessions; docs/security.md#exports)
-------------------------------------------------------------
``session_open {path, [ts, nonce, proof]}`` -> ``{"ticket", "key", "wrapped",
"root", "readonly", "export", "maproot"}`` (or ``{"open": true, "root"}`` from
a master without a cluster secret): asked by a mount without the secret, or
of an export; needs no credentials but what the export rule wants (the
client's address, the export's password proven by ``proof``). The mount then
signs with the ticket and key (:mod:`gfsfs.common.auth.session`), sees
``root`` as its root, and every request passes master.exports.guard. The
data path's requests (``chunks``, ``lease``, ``append_lease``, ``extend``)
then carry ``[ctx]``, the file's opener, whose permission is checked.

client -> master  (data path)
-----------------------------
``chunks {ino, first, count}`` -> ``{"size": int, "chunk_size": int, "chunks":
[{"index", "handle", "version", "replicas": [Replica]}]}``: the chunks that
exist among indexes ``first .. first+count-1``; a missing index is a hole.
Replicas are only live chunkds holding the current version.

``lease {ino, index, [avoid: [chunkd id]]}`` -> ``{"handle", "version", "primary": Replica,
"secondaries": [Replica], "expires_ns"}``: the chunk at ``index`` (allocated,
with replicas placed on distinct chunkds by free space, if it did not exist)
and its write lease. On a new grant the master raises the chunk's version and
calls ``set_version`` on every replica before replying. ``avoid``: chunkds the
client could not reach; a valid lease whose primary is one of them is granted
anew (version raised) with another replica as primary, when there is one.
A valid lease held by a primary the client can reach is extended (same
primary, same version, ``expires_ns`` moved to ``lease_seconds`` from now).
No second primary while a lease may still be used (GFS §3.1): when a new grant
finds an unexpired lease (current, or dropped because its primary was
avoided or declared dead) whose primary did not take the new version, and not
every other replica that lease names did either, the reply waits until that
lease expires (at most ``lease_seconds``). A rename revokes the leases of the
renamed file's chunks (of every file under a renamed directory): their
version goes up, and a writer holding one gets STALE and asks again.

First write (small files): ``lease`` may also carry ``offset``, ``data``
(at most INLINE_MAX bytes), ``[sync]`` and ``[size, mtime_ns]``. When the
chunk has to be allocated, each chunkd creates it holding ``data`` at
``offset`` (``set_version`` with ``data``), the reply adds ``"written": true``,
and with ``size`` the file is extended as ``extend`` would, its Attr under
``"attr"``. For an existing chunk the bytes are ignored (no ``written``) and
the client commits them as usual. A new file's first write is one call instead
of lease, commit and extend.

``append_lease {ino, [index]}`` -> the ``lease`` reply plus ``"index"`` (the
chunk's index), ``"chunk_size"`` and ``"min_offset"``: the lease of the chunk a
record append goes to (GFS §3.3) -- the file's last chunk: the highest index in
its chunk map, or the chunk the file size ends in if later, or ``index`` (sent
by a client whose append got ``next_chunk`` at ``index - 1``) if later still;
allocated (and leased) as ``lease`` does when missing. ``min_offset`` is where
the file size ends inside that chunk (0 if before it, chunk_size if after): the
primary appends no lower, so a record never lands inside a hole made by a
growing truncate. No permission check (like ``lease``).

``extend {ino, size, mtime_ns}`` -> Attr: after data was committed, sets the
file size to ``max(size, current)`` and mtime/ctime.

client -> master  (admin; used by the ``gfs`` CLI, :mod:`gfsfs.tools.cli`)
-------------------------------------------------------------------
``setgoal {ino, goal, [recursive: bool], [ctx]}`` -> ``{"ino", "goal", "inodes":
int (inodes visited), "changed": int (inodes whose goal changed)}``: set the
replication goal (1..16; EINVAL otherwise) of ``ino`` and, with ``recursive``,
of every inode below it. Directories hand their goal to new children. A logged
mutation (op ``setgoal``), so it survives a restart. With a non-root ``ctx`` the
caller must own every inode it changes (EPERM). Only metadata changes here:
re-replication (or trimming) follows from the new goal.

``fileinfo {ino}`` -> ``{"attr": Attr, "chunk_size": int, "in_trash": bool
(unlinked, waiting to be purged), "chunks": [{"index",
"handle", "version", "refcount", "replicas": [{"id", "addr", "rack"}],
"primary": Replica | None, "lease_expires_ns": int | None}]}``: every chunk of a
regular file (``chunks`` is empty for other inodes), in index order. Replicas are
the live chunkds holding the current version; ``primary`` is the holder of an
unexpired lease, if any.

``cluster_status {}`` -> ``{"chunk_size", "inodes", "files" (regular files with a
name), "trash_files", "dirs", "chunks",
"under_goal", "lost", "over_goal", "leases", "lease_extensions" (leases
extended at their primary's heartbeat, since start), "lease_waits" (grants that
waited for an unfenced lease to expire), "chunkds_alive", "chunkds_dead",
"total_bytes", "free_bytes", "used_bytes", "chunkds" (live), "default_goal",
"last_seq", "checkpoint_seq", "servers": [{"id", "addr", "rack", "alive",
"capacity_bytes", "used_bytes", "free_bytes", "chunks", "draining",
"last_heartbeat_age" (seconds)}]}``. A chunk's goal is the largest goal of the files referencing it;
``under_goal`` counts chunks with fewer live replicas than that (``lost``, a
subset, those with none). ``GET /status`` is unchanged (the web/metrics view).

``fsck {}`` -> ``{"chunks", "healthy", "lost", "under_goal", "over_goal", "stale",
"corrupt" (counts of chunks), "chunkds_alive", "chunkds_dead", "problems":
[{"handle", "version", "goal", "live" (live current replicas), "states": [one or
more of "lost", "under_goal", "over_goal", "stale", "corrupt"], "trash_only":
bool, "replicas": [chunkd id], "stale": [{"id", "version", "age" (seconds)}],
"corrupt": [{"id", "age"}], "files": [{"ino", "index", "path": str | None (None:
no name, e.g. in trash), "in_trash": bool}]}]}``: every chunk that is not
healthy. ``stale``/``corrupt`` list replicas found stale at a chunkd's report or
reported corrupt within the last hour (they were deleted when found; the chunk
is re-replicated). ``gfs fsck`` exits 1 when ``lost`` > 0.

``drain {id, [cancel: bool], [status: bool]}`` -> ``{"id", "draining": bool,
"alive": bool, "remaining": int (replicas on it a file still needs), "chunks":
int}``: start draining chunkd ``id`` (no new replicas on it; every replica moved
off, see :mod:`master.services.rebalance`), or with ``cancel`` stop, or with ``status``
only report. ENOENT for an unknown id. ``gfs chunkd drain ID`` polls it.

``checkpoint {}`` -> ``{"seq": int}``: write a checkpoint now (the op log up to
``seq`` is folded into it). ``dump_metadata {}`` -> the namespace as JSON-able
data (names decoded as UTF-8 with backslash escapes), for people to read.

``snapshot {src, parent, name, [ctx]}`` -> ``{"ino" (the copy's inode), "inodes",
"files", "chunks" (chunk references now shared), "leases_revoked", "seconds"}``:
a copy-on-write snapshot (GFS §3.4) of inode ``src`` (a file, or a directory
and everything below it) as ``name`` in directory ``parent``. First every
lease a client may still hold on a chunk of ``src`` is revoked (``lease`` calls
for those files wait meanwhile; the chunks' versions go up, on the replicas
with ``set_versions``, then in the log), then one logged record (op
``snapshot``, with the new inode numbers) copies the metadata and raises the
chunks' reference counts. Hard links inside the tree stay links of each other;
symlinks are copied as they are. EEXIST if ``name`` exists, EINVAL for a
directory into itself; with a non-root ``ctx`` the caller needs write+search
on ``parent`` and read on everything copied. The first ``lease`` (also from
``append_lease`` and truncate) of a chunk with reference count > 1 copies it:
the master logs a reserved handle, tells each replica's chunkd to ``copy`` it
locally, logs op ``cow`` (the file's chunk map points at the copy, the shared
chunk loses a reference) and leases the copy.

``trash_list {}`` -> ``{"trash_time": float, "entries": [{"ino", "parent",
"name" (bin), "path": str | None (the path it had: its old directory's current
path + name; None if that directory is gone), "size", "chunks", "deleted_ns",
"purge_ns" (when the purger takes it)}]}``, oldest deletion first.

``trash_restore {ino, [parent, name]}`` -> ``{"ino", "parent", "name", "attr"}``:
give trashed ``ino`` a name again (op ``restore``, logged): its old one, or
``name`` in ``parent``. ENOENT if it is not in the trash or (without
``parent``) its old directory is gone; EEXIST if the name is taken.

``trash_purge {[older_than: seconds], [inos: [int]]}`` -> ``{"purged", "bytes",
"chunks_freed", "chunks_shared"}``: purge now (op ``purge``) the trashed files
deleted at least ``older_than`` seconds ago (all without it), or only
``inos``. Chunks no other file (a snapshot) references become garbage: the
chunkds delete them on their next heartbeat reply, and ``statfs``/``df``
show the space once their next heartbeats report it.

Quotas (docs/quotas.md): ``quota_set {ino, [bytes], [inodes], [soft_bytes],
[soft_inodes], [grace: seconds]}`` -> QuotaRow sets (or replaces) the quota of
directory ``ino`` (op ``setquota``, logged): hard and soft limits on the bytes
(logical file sizes) and the inodes below it, 0 or absent = no limit, at least
one given; a soft limit may be exceeded for ``grace`` seconds (default 7
days), then it is hard. EINVAL for no limit or a soft limit above the hard
one, ENOTDIR for a non-directory. ``quota_rm {ino}`` -> ``{}`` (op
``rmquota``; ENOENT if it has none). ``quota_list {[ino]}`` -> ``{"quotas":
[QuotaRow]}``: every quota, by path, or with ``ino`` those that apply to it
(its own and its ancestors', nearest first). A QuotaRow: ``ino``, ``path``,
the limits, ``grace``, ``used_bytes``, ``used_inodes``, ``since_bytes``/
``since_inodes`` (ns when the soft limit was first exceeded, 0: it is not) and
``soft_bytes_expired``/``soft_inodes_expired``. Any mutation that would take a
quota over a limit in force is refused with QUOTA (HTTP 403, EDQUOT at the
mount). ``statfs`` with ``ino`` (default the root) adds ``"quota"``: the
QuotaRow of the nearest quota at or above it, when there is one (a mount's df
shows it as the size).

HA (docs/ha.md): ``promote {[epoch]}`` -> HAStatus makes a shadow master the
primary, in an epoch above every epoch so far and at least ``epoch`` (EINVAL
if it is primary already); ``ha_status {}`` -> HAStatus: the master's role and
epoch, the shadows following it with their lag or, on a shadow, how far
behind its primary it is. Every namespace mutation may carry ``rid``
(1..2**63-1): applied once, a retry with the same id answers as the first.

browser, Prometheus, people -> master  (plain HTTP, no msgpack RPC)
-----------------------------------------------------------------
``GET /status`` -> msgpack: the ``statfs`` figures plus ``"role": "master"``,
the op log's sequence numbers and fsyncs, ``"oplog_failed"`` (None or why the
op log is unusable), chunk and lease counts and the ``servers`` rows of
``cluster_status``. ``GET /metrics``: Prometheus text (:mod:`master.api.metrics`). The web page
(:mod:`master.api.web` documents each route): ``GET /`` and ``GET /web/static/``
(the page); JSON for it: ``GET /web/api/list``, ``GET /web/api/file``,
``GET /web/api/cluster``, ``POST /web/api/mkdir``, ``POST /web/api/delete``;
file data: ``GET /web/download``, ``PUT /web/upload``; logins
(:mod:`master.api.weblogin`): ``POST /web/login``, ``POST /web/logout``,
``GET /web/api/session``.
"""
from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from gfsfs.common.protocol.shapes import Attr, Ctx, Empty, Message, Replica, Route, table

SENDER = "client"
SERVER = "master"


# ---------------------------------------------------------------- namespace

class NsReq(TypedDict):
    """What every namespace request may carry: the caller."""
    ctx: NotRequired[Ctx]


class InoReq(NsReq):
    ino: int


class Mutation(TypedDict):
    """What every namespace mutation may carry: a request id (1..2**63-1),
    the same on every retry of one operation. The master applies it once and
    answers a retry as it answered the first attempt (docs/ha.md)."""
    rid: NotRequired[int]


class NameReq(NsReq):
    """A name in a directory."""
    parent: int
    name: bytes


class ParentAttr(TypedDict):
    """The directory's Attr after the change (absent if it went meanwhile)."""
    parent_attr: NotRequired[Attr]


class AttrReply(Attr, ParentAttr):
    """An Attr; after create, mkdir, symlink and link also its directory's."""


class SetattrReq(InoReq, Mutation):
    mode: NotRequired[int]          # absent = unchanged, as every field below
    uid: NotRequired[int]
    gid: NotRequired[int]
    size: NotRequired[int]
    atime_ns: NotRequired[int]
    mtime_ns: NotRequired[int]
    write_handle: NotRequired[bool]     # through a descriptor open for writing (ftruncate)


class CreateReq(NameReq, Mutation):
    mode: int
    uid: int
    gid: int
    rdev: NotRequired[int]


class MkdirReq(NameReq, Mutation):
    mode: int
    uid: int
    gid: int


class SymlinkReq(NameReq, Mutation):
    target: bytes
    uid: int
    gid: int


class LinkReq(NameReq, Mutation):
    ino: int


class RenameReq(NameReq, Mutation):
    new_parent: int
    new_name: bytes
    flags: NotRequired[int]         # 0 | RENAME_NOREPLACE | RENAME_EXCHANGE


class ReaddirReq(InoReq):
    offset: int                     # 0 = start; else a next_offset from a reply
    limit: NotRequired[int]


class ReaddirReply(TypedDict):
    entries: list[tuple[bytes, Attr, int]]      # [name, Attr, next_offset]


class ReadlinkReply(TypedDict):
    target: bytes


class XattrReq(InoReq):
    name: bytes


class SetxattrReq(XattrReq, Mutation):
    value: bytes
    flags: NotRequired[int]         # XATTR_CREATE | XATTR_REPLACE


class RemoveNameReq(NameReq, Mutation):
    """unlink, rmdir"""


class RemovexattrReq(XattrReq, Mutation):
    """removexattr"""


class GetxattrReply(TypedDict):
    value: bytes


class ListxattrReply(TypedDict):
    names: list[bytes]


class QuotaRow(TypedDict):
    """A directory quota (master.state.quota) and its usage."""
    ino: int
    path: NotRequired[str | None]   # None: the directory has no path (cannot be)
    bytes: int
    inodes: int
    soft_bytes: int
    soft_inodes: int
    grace: float                    # seconds
    used_bytes: int
    used_inodes: int
    since_bytes: int                # ns when the soft limit was first exceeded (0: not)
    since_inodes: int
    soft_bytes_expired: bool        # the soft limit acts as hard now
    soft_inodes_expired: bool


class StatfsReq(TypedDict):
    protocol: NotRequired[int]      # PROTOCOL_VERSION; absent = 1
    ino: NotRequired[int]           # whose nearest quota to report (default: the root)


class StatfsReply(TypedDict):
    total_bytes: int
    free_bytes: int
    used_bytes: int
    chunkds: int                    # live chunkds
    files: int                      # inodes
    chunk_size: int
    protocol: int
    primary: bool                   # whether this master is the primary (docs/ha.md)
    primary_url: str                # the primary's URL, if known ("" if not)
    quota: NotRequired[QuotaRow]    # the nearest quota at or above ``ino``


# ---------------------------------------------------------------- data path

class ChunksReq(TypedDict):
    ino: int
    first: int
    count: int
    ctx: NotRequired[Ctx]           # an export session's reader (master.exports.guard)


class ChunkLocation(TypedDict):
    index: int
    handle: int
    version: int
    replicas: list[Replica]


class ChunksReply(TypedDict):
    size: int
    chunk_size: int
    chunks: list[ChunkLocation]


class LeaseReq(TypedDict):
    ino: int
    index: int
    ctx: NotRequired[Ctx]           # an export session's writer (master.exports.guard)
    avoid: NotRequired[list[str]]   # chunkd ids the client could not reach
    # a first write, created with the chunk when the lease allocates it:
    data: NotRequired[bytes]        # at most INLINE_MAX bytes
    offset: NotRequired[int]        # with data
    sync: NotRequired[bool]
    size: NotRequired[int]          # extend the file to this, as extend would
    mtime_ns: NotRequired[int]


class Grant(TypedDict):
    """A chunk's write lease."""
    handle: int
    version: int
    primary: Replica
    secondaries: list[Replica]
    expires_ns: int


class LeaseReply(Grant):
    written: NotRequired[bool]      # the first write's bytes are in the new chunk
    attr: NotRequired[Attr]         # the file's, when ``size`` extended it


class AppendLeaseReq(TypedDict):
    ino: int
    ctx: NotRequired[Ctx]
    index: NotRequired[int]         # at least this chunk (the one before it was full)


class AppendLeaseReply(Grant):
    index: int
    chunk_size: int
    min_offset: int


class ExtendReq(TypedDict):
    ino: int
    size: int
    mtime_ns: int
    ctx: NotRequired[Ctx]


# ---------------------------------------------------------------- export sessions

class SessionOpenReq(TypedDict):
    path: str                       # the directory the mount sees as its root
    ts: NotRequired[str]            # with proof: unix ms
    nonce: NotRequired[str]         # with proof: hex, used once
    proof: NotRequired[str]         # gfsfs.common.auth.session.open_proof of the password


class SessionOpenReply(TypedDict):
    open: NotRequired[bool]         # an open cluster: nothing to sign (only root)
    root: int                       # the inode shown as the mount's root
    ticket: NotRequired[str]        # the key id of the session's signatures
    key: NotRequired[bytes]         # the session key (wrapped: XOR a pad of the password)
    wrapped: NotRequired[bool]
    readonly: NotRequired[bool]
    export: NotRequired[str]
    maproot: NotRequired[list[int] | None]


# ---------------------------------------------------------------- admin

class SetgoalReq(TypedDict):
    ino: int
    goal: int                       # 1..16
    recursive: NotRequired[bool]
    ctx: NotRequired[Ctx]


class SetgoalReply(TypedDict):
    ino: int
    goal: int
    inodes: int                     # inodes visited
    changed: int                    # inodes whose goal changed


class FileinfoReq(TypedDict):
    ino: int


class RackReplica(Replica):
    rack: str


class FileChunk(TypedDict):
    index: int
    handle: int
    version: int
    refcount: int
    replicas: list[RackReplica]
    primary: Replica | None         # the holder of an unexpired lease
    lease_expires_ns: int | None


class FileinfoReply(TypedDict):
    attr: Attr
    chunk_size: int
    in_trash: bool
    chunks: list[FileChunk]


class ServerRow(TypedDict):
    """A chunkd in ``cluster_status`` and ``GET /status``."""
    id: str
    addr: str
    rack: str
    alive: bool
    capacity_bytes: int
    used_bytes: int
    free_bytes: int
    chunks: int
    draining: bool
    last_heartbeat_age: float       # seconds


class ClusterStatusReply(TypedDict):
    chunk_size: int
    inodes: int
    files: int                      # regular files with a name
    trash_files: int
    dirs: int
    chunks: int
    under_goal: int
    lost: int
    over_goal: int
    leases: int
    lease_extensions: int
    lease_waits: int
    chunkds_alive: int
    chunkds_dead: int
    total_bytes: int
    free_bytes: int
    used_bytes: int
    chunkds: int                    # live
    default_goal: int
    last_seq: int
    checkpoint_seq: int
    servers: list[ServerRow]
    ha: HASummary


class StaleReplica(TypedDict):
    id: str
    version: int
    age: float                      # seconds


class CorruptReplica(TypedDict):
    id: str
    age: float


class ProblemFile(TypedDict):
    ino: int
    index: int
    path: str | None                # None: no name (e.g. in trash)
    in_trash: bool


class FsckProblem(TypedDict):
    handle: int
    version: int
    goal: int
    live: int                       # live current replicas
    states: list[str]               # "lost", "under_goal", "over_goal", "stale", "corrupt"
    trash_only: bool
    replicas: list[str]             # chunkd ids
    stale: list[StaleReplica]
    corrupt: list[CorruptReplica]
    files: list[ProblemFile]


class FsckReply(TypedDict):
    chunks: int
    healthy: int
    lost: int
    under_goal: int
    over_goal: int
    stale: int
    corrupt: int
    chunkds_alive: int
    chunkds_dead: int
    problems: list[FsckProblem]


class DrainReq(TypedDict):
    id: str
    cancel: NotRequired[bool]
    status: NotRequired[bool]


class DrainReply(TypedDict):
    id: str
    draining: bool
    alive: bool
    remaining: int                  # replicas on it a file still needs
    chunks: int


class CheckpointReply(TypedDict):
    seq: int


class DumpReply(TypedDict):
    """The namespace for people to read (``master.state.image.to_json``)."""
    chunk_size: int
    next_ino: int
    next_handle: int
    epoch: int                      # the master epoch (raised by each promotion)
    chunk_count: int
    inodes: list[dict[str, Any]]    # Attr plus type, mode_text, xattrs, entries, chunks, target
    quotas: list[dict[str, Any]]    # QuotaRow without path


class QuotaSetReq(TypedDict):
    ino: int
    bytes: NotRequired[int]         # hard limits; 0 / absent: none
    inodes: NotRequired[int]
    soft_bytes: NotRequired[int]
    soft_inodes: NotRequired[int]
    grace: NotRequired[float]       # seconds a soft limit may be exceeded (default 7 days)


class QuotaRmReq(TypedDict):
    ino: int


class QuotaListReq(TypedDict):
    ino: NotRequired[int]           # only the quotas that apply to it


class QuotaListReply(TypedDict):
    quotas: list[QuotaRow]


class SnapshotReq(TypedDict):
    src: int
    parent: int
    name: bytes
    ctx: NotRequired[Ctx]


class SnapshotReply(TypedDict):
    ino: int                        # the copy's inode
    inodes: int
    files: int
    chunks: int                     # chunk references now shared
    leases_revoked: int
    seconds: float


class TrashEntry(TypedDict):
    ino: int
    parent: int
    name: bytes | None
    path: str | None                # its old directory's current path + name
    size: int
    chunks: int
    deleted_ns: int
    purge_ns: int                   # when the purger takes it


class TrashListReply(TypedDict):
    trash_time: float
    entries: list[TrashEntry]


class TrashRestoreReq(TypedDict):
    ino: int
    parent: NotRequired[int]        # both or neither: a new name
    name: NotRequired[bytes]


class TrashRestoreReply(TypedDict):
    ino: int
    parent: int
    name: bytes
    attr: Attr


class TrashPurgeReq(TypedDict):
    older_than: NotRequired[float]  # seconds
    inos: NotRequired[list[int]]


class TrashPurgeReply(TypedDict):
    purged: int
    bytes: int
    chunks_freed: int
    chunks_shared: int


class MasterStatus(StatfsReply):
    """``GET /status``: the statfs figures and more."""
    role: str                       # "master"
    inodes: int
    chunks: int
    chunks_without_replicas: int
    leases: int
    pending_deletes: int
    last_seq: int
    durable_seq: int
    checkpoint_seq: int
    fsyncs: int
    oplog_failed: str | None
    servers: list[ServerRow]


# ---------------------------------------------------------------- HA (docs/ha.md)

class PromoteReq(TypedDict):
    epoch: NotRequired[int]         # at least this epoch (the etcd election's revision)


class ShadowState(TypedDict):
    url: str
    acked: int
    behind: int                     # records
    synchronous: bool
    following: bool
    last_ack_seconds: float | None
    dropped: int                    # times dropped from the synchronous set


class Following(TypedDict):
    primary: str
    records_behind: int | None      # None until the primary was heard from
    seconds_behind: float | None    # since the primary was last heard from
    applied: int
    resyncs: int


class HASummary(TypedDict):
    """The masters, in ``cluster_status`` (``gfs status``)."""
    primary: bool
    epoch: int
    primary_url: str
    shadows: list[ShadowState]
    following: NotRequired[Following]


class HAStatus(TypedDict):
    url: str
    primary: bool
    epoch: int
    primary_url: str
    last_seq: int
    durable_seq: int
    shadows: list[ShadowState]
    following: NotRequired[Following]


MESSAGES: dict[str, Message] = table(
    # namespace
    Message("lookup", NameReq, Attr, "the entry ``name`` in directory ``parent``"),
    Message("getattr", InoReq, Attr, "an inode's attributes"),
    Message("setattr", SetattrReq, Attr, "change mode, owner, size or times"),
    Message("create", CreateReq, AttrReply, "a regular file, fifo or socket (mknod); EEXIST"),
    Message("mkdir", MkdirReq, AttrReply, "a directory"),
    Message("symlink", SymlinkReq, AttrReply, "a symbolic link to ``target``"),
    Message("link", LinkReq, AttrReply, "a hard link to ``ino``"),
    Message("unlink", RemoveNameReq, ParentAttr, "remove a name (a file's last: to the trash)"),
    Message("rmdir", RemoveNameReq, ParentAttr, "remove an empty directory"),
    Message("rename", RenameReq, Empty, "move a name; revokes the leases of what moved"),
    Message("readdir", ReaddirReq, ReaddirReply, "entries after a stable cookie"),
    Message("readlink", InoReq, ReadlinkReply, "a symlink's target"),
    Message("setxattr", SetxattrReq, Empty, "set an extended attribute"),
    Message("getxattr", XattrReq, GetxattrReply, "an extended attribute (ENODATA)"),
    Message("listxattr", InoReq, ListxattrReply, "the names of an inode's xattrs"),
    Message("removexattr", RemovexattrReq, Empty, "remove an extended attribute"),
    Message("statfs", StatfsReq, StatfsReply, "space and counts; the protocol check"),
    # data path
    Message("chunks", ChunksReq, ChunksReply, "the chunks among ``count`` indexes"),
    Message("lease", LeaseReq, LeaseReply, "a chunk's write lease, allocating it"),
    Message("append_lease", AppendLeaseReq, AppendLeaseReply,
            "the lease of the chunk a record append goes to"),
    Message("extend", ExtendReq, Attr, "file size = max(size, current), and mtime"),
    # export sessions (docs/security.md#exports)
    Message("session_open", SessionOpenReq, SessionOpenReply,
            "a mount's session of an export (no credentials needed but the rule's)"),
    # admin
    Message("setgoal", SetgoalReq, SetgoalReply, "the replication goal, maybe of a tree"),
    Message("fileinfo", FileinfoReq, FileinfoReply, "a file's chunks, replicas, leases"),
    Message("cluster_status", Empty, ClusterStatusReply, "the cluster (``gfs status``)"),
    Message("fsck", Empty, FsckReply, "every chunk that is not healthy"),
    Message("drain", DrainReq, DrainReply, "move every replica off a chunkd"),
    Message("checkpoint", Empty, CheckpointReply, "write a checkpoint now"),
    Message("dump_metadata", Empty, DumpReply, "the namespace as JSON-able data"),
    Message("snapshot", SnapshotReq, SnapshotReply, "copy-on-write copy of a file or tree"),
    Message("trash_list", Empty, TrashListReply, "the trash, oldest deletion first"),
    Message("quota_set", QuotaSetReq, QuotaRow, "set a directory's quota (limits, grace)"),
    Message("quota_rm", QuotaRmReq, Empty, "remove a directory's quota"),
    Message("quota_list", QuotaListReq, QuotaListReply, "quotas with their usage"),
    Message("trash_restore", TrashRestoreReq, TrashRestoreReply, "give a trashed file a name"),
    Message("trash_purge", TrashPurgeReq, TrashPurgeReply, "purge trashed files now"),
    Message("promote", PromoteReq, HAStatus, "make this shadow master the primary"),
    Message("ha_status", Empty, HAStatus, "role, epoch, shadows and their lag"),
)

ROUTES: list[Route] = [
    Route("GET", "/status", "the master's state (msgpack)", MasterStatus),
    Route("GET", "/metrics", "Prometheus text (master.api.metrics)"),
    Route("GET", "/", "the web page (master.api.web documents each route)"),
    Route("GET", "/web/static/", "the page's files"),
    Route("GET", "/web/api/list?path=DIR", "JSON: a directory listing"),
    Route("GET", "/web/api/file?path=FILE", "JSON: a file's details"),
    Route("GET", "/web/api/cluster", "JSON: chunkds, replication, traffic, trash"),
    Route("POST", "/web/api/mkdir?path=DIR", "make a directory"),
    Route("POST", "/web/api/delete?path=PATH", "delete a file or an empty directory"),
    Route("GET", "/web/download?path=FILE", "a file's bytes, streamed"),
    Route("PUT", "/web/upload?path=FILE", "the body becomes the file, streamed"),
    Route("POST", "/web/login", "JSON user+password (or token): a session cookie, a CSRF token"),
    Route("POST", "/web/logout", "forget the session (its CSRF token in X-GFS-CSRF)"),
    Route("GET", "/web/api/session", "JSON: the session's user, role and CSRF token"),
]
