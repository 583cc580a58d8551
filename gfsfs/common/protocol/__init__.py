"""Every message between gfsfs processes: this package, one module per peer pair.

=============================================  =========================================
module                                         messages
=============================================  =========================================
:mod:`gfsfs.common.protocol.client_master`     a client (mount, library, ``gfs`` CLI,
                                               web page, Prometheus) -> the master:
                                               namespace, data path, admin; ``/status``,
                                               ``/metrics``, the web page's routes
:mod:`gfsfs.common.protocol.chunkd_master`     a chunkd -> the master: register,
                                               heartbeats, chunk reports
:mod:`gfsfs.common.protocol.master_chunkd`     the master -> a chunkd: versions,
                                               re-replication, snapshot copies
:mod:`gfsfs.common.protocol.client_chunkd`     a client -> a chunkd: pushes, commits,
                                               record appends, reads; also what one
                                               chunkd sends another (``apply``, forwarded
                                               ``truncate`` and ``sync``, the push chain,
                                               re-replication's reads)
:mod:`gfsfs.common.protocol.master_master`     the master -> its shadows (issue 13;
                                               none yet)
=============================================  =========================================

Each module's docstring is the prose of its messages; ``SENDER`` and
``SERVER`` name the pair, ``MESSAGES`` (name -> :class:`~gfsfs.common.protocol.shapes.Message`)
types every ``POST /rpc/<name>`` as a ``TypedDict`` request and reply, and
``ROUTES`` lists the raw routes. ``tests/http/test_protocol.py`` checks that the
RPCs and routes the master and chunkd serve are exactly these;
``tests/unit/test_protocol_types.py`` checks every field a handler reads is a
field of its request, and every call site names a message of its own peer
pair with fields of that message.

Transport: HTTP/1.1 keep-alive. Control messages are ``POST /rpc/<name>`` with a
msgpack map body and a msgpack map reply (see :mod:`gfsfs.common.rpc`). Chunk bytes
travel as raw ``application/octet-stream`` bodies. Errors are
``{"error": {"code": CODE, "message": TEXT}}`` with the status from
:mod:`gfsfs.common.errors`. Times are integers in nanoseconds since the epoch (``*_ns``).
Names (file names, xattr names and values, symlink targets) are msgpack *bin*
(``bytes``), since POSIX names are bytes. A server ignores fields it does not
read; a field marked ``NotRequired`` (``[field]`` in the prose) may be left out.

Version: :data:`PROTOCOL_VERSION` (defined once, below), raised whenever a
message changes incompatibly. It is exchanged where a peer first talks to the
master: a chunkd's ``register`` and a client's ``statfs`` (the mount's first
call) carry ``protocol: int``, and their replies carry the master's. Either
side refuses another version with PROTOCOL (400), naming both versions;
a missing ``protocol`` (an older peer) counts as version 1.

Shared shapes (defined once, in :mod:`gfsfs.common.protocol.shapes`)
----------------------------------------------------------------------
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

On disk (chunkd/storage/diskstore.py): ``<handle:016x>.chunk`` holds the data,
``<handle:016x>.meta`` the header ``META_HEADER`` then one u32 CRC32C per block.
"""
from __future__ import annotations

import struct

from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol.shapes import Attr, Ctx, Empty, Message, Replica, Route

__all__ = ["PROTOCOL_VERSION", "CHAIN_HEADER", "BLOCK_SIZE", "META_HEADER", "META_MAGIC",
           "META_FORMAT", "INLINE_MAX", "MAX_NAME", "MAX_SYMLINK", "XATTR_CREATE",
           "XATTR_REPLACE", "RENAME_NOREPLACE", "RENAME_EXCHANGE", "check_version",
           "Attr", "Ctx", "Empty", "Message", "Replica", "Route"]

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
