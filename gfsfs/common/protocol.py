"""Every message between gfsfs processes, in one place.

Transport: HTTP/1.1 keep-alive. Control messages are ``POST /rpc/<name>`` with a
msgpack map body and a msgpack map reply (see :mod:`gfsfs.common.rpc`). Chunk bytes
travel as raw ``application/octet-stream`` bodies. Errors are
``{"error": {"code": CODE, "message": TEXT}}`` with the status from
:mod:`gfsfs.common.errors`. Times are integers in nanoseconds since the epoch (``*_ns``).
Names (file names, xattr names and values, symlink targets) are msgpack *bin*
(``bytes``), since POSIX names are bytes.

Version: :data:`PROTOCOL_VERSION` (defined once, below), raised whenever a
message changes incompatibly. It is exchanged where a peer first talks to the
master: a chunkd's ``register`` and a client's ``statfs`` (the mount's first
call) carry ``protocol: int``, and their replies carry the master's. Either
side refuses another version with PROTOCOL (400), naming both versions;
a missing ``protocol`` (an older peer) counts as version 1.

Shared shapes
-------------
``Attr`` (an inode's attributes)::

    {"ino": int, "mode": int (st_mode, type bits included), "nlink": int,
     "uid": int, "gid": int, "size": int, "atime_ns": int, "mtime_ns": int,
     "ctime_ns": int, "goal": int (replication goal), "rdev": int,
     "blocks": int (512-byte blocks charged, sum of chunk bytes / 512),
     "nxattr": int (how many xattrs the inode has; 0 lets a client answer
               getxattr/listxattr itself until its attributes expire)}

``Replica``::  {"id": str (chunkd id), "addr": str ("http://host:port")}

``Ctx`` (the caller; optional in every namespace RPC, root when absent)::

    {"uid": int, "gid": int, "gids": [int, ...]}

client -> master  (namespace; master checks POSIX permissions against ctx)
-------------------------------------------------------------------------
===============  ===========================================  =====================
rpc              request fields                               reply
===============  ===========================================  =====================
lookup           parent, name                                 Attr
getattr          ino                                          Attr
setattr          ino, [mode, uid, gid, size, atime_ns,        Attr
                 mtime_ns] (absent = unchanged)
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
statfs           [protocol]                                   {"total_bytes", "free_bytes",
                                                              "used_bytes", "files",
                                                              "chunk_size", "chunkds",
                                                              "protocol"}
===============  ===========================================  =====================

Replies to create, mkdir, symlink, link, unlink and rmdir also carry
``"parent_attr"``: the directory's Attr after the change, which the client
gives the kernel's next getattr of it (the kernel drops its copy on every
change) instead of asking again.

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
"capacity_bytes", "used_bytes", "free_bytes", "chunks", "last_heartbeat_age"
(seconds)}]}``. A chunk's goal is the largest goal of the files referencing it;
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

browser, Prometheus -> master  (plain HTTP, no msgpack RPC)
---------------------------------------------------------
``GET /metrics``: Prometheus text (:mod:`master.api.metrics`). The web page
(:mod:`master.api.web` documents each route): ``GET /`` and ``GET /web/static/``
(the page); JSON for it: ``GET /web/api/list``, ``GET /web/api/file``,
``GET /web/api/cluster``, ``POST /web/api/mkdir``, ``POST /web/api/delete``;
file data: ``GET /web/download``, ``PUT /web/upload``.

chunkd -> master
----------------
``register {id, addr, rack, capacity_bytes, used_bytes, free_bytes, chunks:
[[handle, version], ...], [protocol]}`` -> ``{"heartbeat_interval": float,
"delete": [handle], "protocol": int}``: at start-up and whenever a heartbeat
answers ``reregister``. PROTOCOL (400) when ``protocol`` is not the master's
(see "Version" above); the chunkd logs that as an ERROR and keeps retrying.

``heartbeat {id, capacity_bytes, used_bytes, free_bytes, chunk_count,
[extend: [handle]]}`` -> ``{"delete": [handle], "reregister": bool,
"extended": [handle]}``. A chunkd not heard from for
``dead_after_heartbeats`` intervals is dead; its replicas are forgotten.
``extend`` (GFS §3.1: extensions ride on heartbeats): the chunks this chunkd
committed or appended to as primary since its previous heartbeat. The master
extends to ``lease_seconds`` from now each lease that is still valid and held
by this chunkd, and lists those under ``extended``; a lapsed or moved lease is
never revived (no version change happens here).

``report_chunks {id, added: [[handle, version]], removed: [handle],
corrupt: [handle]}`` -> ``{"delete": [handle]}``: incremental changes.
``corrupt`` replicas (found by a read or by the background scrubber at
``[chunk_server] scrub_bytes_per_sec``) are already deleted by the chunkd; the
master re-replicates the chunk. Replicas beyond a chunk's goal are removed
through the ``delete`` list of ``heartbeat`` replies (fullest chunkd first).

master -> chunkd
----------------
``set_version {handle, version, create: bool, [offset, data, sync]}`` -> ``{}``:
record the chunk's new version (before a lease grant); ``create`` makes the
chunk, empty or holding ``data`` (at most INLINE_MAX bytes) at ``offset``,
fsync'd when ``sync`` (a replica that cannot store the bytes deletes the chunk
and fails). A new chunk's files reach the disk with its first sync or version
change, not at creation. ``create`` of a handle the chunkd already holds (an
orphan left by a master that crashed before logging its allocation) empties
it first.
``delete {handles: [handle]}`` -> ``{}``.
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
code], ...]}``: many ``set_version`` (without ``create``) at once, each fsync'd
(a snapshot revoking the leases of a tree).

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

``POST /rpc/commit {handle, version, offset, data_id | data, secondaries: [addr],
[sync: bool]}`` at the primary -> ``{"length": int}``: under the chunk's lock
the primary applies the pushed data at ``offset`` (CRC32C of touched 64 KiB
blocks recomputed), then sends ``apply`` with the same fields to every secondary
and answers when all have applied. A write of at most ``INLINE_MAX`` bytes may
skip the push and carry its bytes in ``data`` (bin) instead of ``data_id``: for
small files the push chain's extra round trips cost more than the bytes. ``sync`` fsyncs every replica first.
Errors: STALE when ``version`` differs from the replica's, NOCHUNK, ENOSPC,
UNAVAILABLE (a secondary failed: the message names it).

``POST /rpc/append {handle, version, chunk_size, min_offset, secondaries:
[addr], data_id | data, [sync]}`` at the primary -> ``{"offset": int,
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
primary and some secondaries (the client's retry appends it again further on:
a duplicate).

``POST /rpc/apply {handle, version, offset, data_id, [sync]}``: primary ->
secondary, the same mutation in the primary's order. Instead of ``data_id`` it
may carry ``data`` (bin): the bytes themselves (record appends of small
records).

``POST /rpc/truncate {handle, version, length, secondaries: [addr]}`` at the
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

``GET /status`` -> msgpack ``{"id", "addr", "protocol", "chunks", "used_bytes",
...}``. ``GET /metrics``: Prometheus text (:mod:`chunkd.api.metrics`).

Short-circuit reads (same host only; gfsfs/common/shortcircuit.py): on the abstract
Unix socket ``"\\0gfsfs-chunkd " + addr``, framed msgpack (u32 length prefix)
``{"handle", "version"}`` -> ``{"id", "version"}`` with the chunk's data and
meta file descriptors attached (SCM_RIGHTS), or ``{"code", "message"}``.

On disk (chunkd/storage/diskstore.py): ``<handle:016x>.chunk`` holds the data,
``<handle:016x>.meta`` the header ``META_HEADER`` then one u32 CRC32C per block.
"""
from __future__ import annotations

import struct

from gfsfs.common.errors import Code, GFSError

PROTOCOL_VERSION = 1            # the one definition; see "Version" above
CHAIN_HEADER = "x-gfs-chain"
BLOCK_SIZE = 64 * 1024          # CRC32C block
META_HEADER = struct.Struct("<4sIQ")   # chunk meta file: magic, format, chunk version
META_MAGIC = b"GFSC"
META_FORMAT = 1
INLINE_MAX = 64 * 1024          # writes/records up to this travel inside commit/append, unpushed
MAX_NAME = 255                  # bytes in one file name
MAX_SYMLINK = 4095              # bytes in a symlink target
XATTR_CREATE = 1
XATTR_REPLACE = 2
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def check_version(theirs: object, peer: str, us: str) -> None:
    """Refuse a peer that speaks another protocol: ``theirs`` is the
    ``protocol`` field it sent (None: an older peer, version 1); ``peer`` and
    ``us`` name both sides in the PROTOCOL error."""
    version = 1 if theirs is None else theirs
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise GFSError(Code.PROTOCOL, f"{peer} speaks gfsfs protocol {repr(version)[:40]}; "
                                      f"{us} speaks protocol {PROTOCOL_VERSION}")
