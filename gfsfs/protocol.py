"""Every message between gfsfs processes, in one place.

Transport: HTTP/1.1 keep-alive. Control messages are ``POST /rpc/<name>`` with a
msgpack map body and a msgpack map reply (see :mod:`gfsfs.rpc`). Chunk bytes
travel as raw ``application/octet-stream`` bodies. Errors are
``{"error": {"code": CODE, "message": TEXT}}`` with the status from
:mod:`gfsfs.errors`. Times are integers in nanoseconds since the epoch (``*_ns``).
Names (file names, xattr names and values, symlink targets) are msgpack *bin*
(``bytes``), since POSIX names are bytes.

PROTOCOL_VERSION = 1

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
unlink           parent, name                                 {}
rmdir            parent, name                                 {}
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
statfs           -                                            {"total_bytes", "free_bytes",
                                                              "used_bytes", "files",
                                                              "chunk_size", "chunkds"}
===============  ===========================================  =====================

client -> master  (data path)
-----------------------------
``chunks {ino, first, count}`` -> ``{"size": int, "chunk_size": int, "chunks":
[{"index", "handle", "version", "replicas": [Replica]}]}``: the chunks that
exist among indexes ``first .. first+count-1``; a missing index is a hole.
Replicas are only live chunkds holding the current version.

``lease {ino, index}`` -> ``{"handle", "version", "primary": Replica,
"secondaries": [Replica], "expires_ns"}``: the chunk at ``index`` (allocated,
with replicas placed on distinct chunkds by free space, if it did not exist)
and its write lease. On a new grant the master raises the chunk's version and
calls ``set_version`` on every replica before replying.

``extend {ino, size, mtime_ns}`` -> Attr: after data was committed, sets the
file size to ``max(size, current)`` and mtime/ctime.

client -> master  (admin; used by the ``gfs`` CLI, :mod:`gfsfs.cli`)
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
"under_goal", "lost", "over_goal", "leases", "chunkds_alive", "chunkds_dead",
"total_bytes", "free_bytes", "used_bytes", "chunkds" (live), "default_goal",
"last_seq", "checkpoint_seq", "servers": [{"id", "addr", "rack", "alive",
"capacity_bytes", "used_bytes", "free_bytes", "chunks", "last_heartbeat_age"
(seconds)}]}``. A chunk's goal is the largest goal of the files referencing it;
``under_goal`` counts chunks with fewer live replicas than that (``lost``, a
subset, those with none). ``GET /status`` is unchanged (the web/metrics view).

``checkpoint {}`` -> ``{"seq": int}``: write a checkpoint now (the op log up to
``seq`` is folded into it). ``dump_metadata {}`` -> the namespace as JSON-able
data (names decoded as UTF-8 with backslash escapes), for people to read.

chunkd -> master
----------------
``register {id, addr, rack, capacity_bytes, used_bytes, free_bytes, chunks:
[[handle, version], ...]}`` -> ``{"heartbeat_interval": float, "delete":
[handle]}``: at start-up and whenever a heartbeat answers ``reregister``.

``heartbeat {id, capacity_bytes, used_bytes, free_bytes, chunk_count}`` ->
``{"delete": [handle], "reregister": bool}``. A chunkd not heard from for
``dead_after_heartbeats`` intervals is dead; its replicas are forgotten.

``report_chunks {id, added: [[handle, version]], removed: [handle],
corrupt: [handle]}`` -> ``{"delete": [handle]}``: incremental changes.

master -> chunkd
----------------
``set_version {handle, version, create: bool}`` -> ``{}``: record the chunk's new
version (before a lease grant); ``create`` makes an empty chunk.
``delete {handles: [handle]}`` -> ``{}``.

client -> chunkd  (data plane)
------------------------------
``PUT /data/<data_id>`` raw body, header ``X-GFS-Chain: addr2,addr3`` (the rest
of the chain, possibly empty) -> msgpack ``{"length": int}``. The chunkd keeps
the bytes under ``data_id`` (a client-made random hex id) for
``push_buffer_ttl`` seconds and streams them on to the next address in the
chain while they arrive; it answers when its own copy and the whole rest of
the chain have them.

``POST /rpc/commit {handle, version, offset, data_id, secondaries: [addr],
[sync: bool]}`` at the primary -> ``{"length": int}``: under the chunk's lock
the primary applies the pushed data at ``offset`` (CRC32C of touched 64 KiB
blocks recomputed), then sends ``apply`` with the same fields to every secondary
and answers when all have applied. ``sync`` fsyncs every replica first.
Errors: STALE when ``version`` differs from the replica's, NOCHUNK, ENOSPC,
UNAVAILABLE (a secondary failed: the message names it).

``POST /rpc/apply {handle, version, offset, data_id, [sync]}``: primary ->
secondary, the same mutation in the primary's order.

``POST /rpc/truncate {handle, version, length, secondaries: [addr]}`` at the
primary -> ``{}``: cut the chunk to ``length`` bytes on every replica (forwarded
as ``truncate`` without secondaries).

``POST /rpc/sync {handles: [handle]}`` -> ``{}``: fsync(2) those chunk files.

``GET /chunk/<handle>?offset=O&length=N&version=V`` -> raw bytes, at most N,
fewer if the chunk file is shorter (the reader pads with zeros up to the file
size it got from the master). Every 64 KiB block touched is verified against
its CRC32C first: a mismatch answers CORRUPT and is reported to the master.
STALE when the replica's version is older than V, NOCHUNK when unknown.

``GET /status`` -> msgpack ``{"id", "addr", "chunks", "used_bytes", ...}``.
"""
from __future__ import annotations

PROTOCOL_VERSION = 1
CHAIN_HEADER = "x-gfs-chain"
BLOCK_SIZE = 64 * 1024          # CRC32C block
MAX_NAME = 255                  # bytes in one file name
MAX_SYMLINK = 4095              # bytes in a symlink target
XATTR_CREATE = 1
XATTR_REPLACE = 2
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
