"""Short-circuit local reads: a client on the same host as a chunkd reads the
chunk files itself (HDFS's ``dfs.client.read.shortcircuit``).

The chunkd listens on an abstract Unix socket named after its HTTP address
(:func:`socket_name`), so only a process on the same host and in the same
network namespace can reach it, and two clusters on one host never meet. A
client sends one request, ``{"handle", "version"}``; the chunkd checks the
peer's uid (root or its own), the handle and the version, opens the chunk's
data and meta files read-only and passes the two descriptors back with
``SCM_RIGHTS`` beside a reply ``{"id", "version"}`` (or ``{"code",
"message"}``). Everything else — the version in the meta header, the CRC32C
of every 64 KiB block read — the client checks itself on each read
(:func:`read_verified`); any doubt (a mismatch, which a concurrent write can
cause too) sends the read to the chunkd over HTTP instead, which settles it.

This module is the wire format and the block checks shared by both sides;
``chunkd/api/shortcircuit.py`` serves, :class:`gfsfs.client.local.LocalReads`
reads.
"""
from __future__ import annotations

import os
import struct

import crc32c
import msgpack

from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import BLOCK_SIZE, META_FORMAT, META_HEADER, META_MAGIC

FRAME = struct.Struct("<I")            # length prefix of each message
MAX_MESSAGE = 4096


def socket_name(addr: str) -> bytes:
    """The abstract socket of the chunkd serving HTTP at ``addr``."""
    return b"\0gfsfs-chunkd " + addr.rstrip("/").encode()[:90]


def pack(msg: dict[str, object]) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return FRAME.pack(len(body)) + body


def unpack(data: bytes) -> dict[str, object]:
    """One framed message; BADREQ when it is not a whole msgpack map."""
    if len(data) < FRAME.size:
        raise GFSError(Code.BADREQ, "short short-circuit message")
    (n,) = FRAME.unpack_from(data)
    if n > MAX_MESSAGE or len(data) != FRAME.size + n:
        raise GFSError(Code.BADREQ, "bad short-circuit message length")
    try:
        msg = msgpack.unpackb(data[FRAME.size:], raw=False)
    except Exception as exc:
        raise GFSError(Code.BADREQ, f"bad short-circuit message: {exc}") from None
    if not isinstance(msg, dict):
        raise GFSError(Code.BADREQ, "short-circuit message is not a map")
    return msg


class Mismatch(Exception):
    """The local files could not vouch for these bytes; read over HTTP."""


def read_verified(data_fd: int, meta_fd: int, version: int, offset: int, length: int) -> bytes:
    """At most ``length`` bytes at ``offset`` of a chunk through its files,
    every block touched checked against its CRC32C. Raises :class:`Mismatch`
    when the header, the length or a checksum disagrees (corruption, a write in
    progress or a stale replica: the caller asks the chunkd instead)."""
    header = os.pread(meta_fd, META_HEADER.size, 0)
    if len(header) != META_HEADER.size:
        raise Mismatch("short meta header")
    magic, fmt, have = META_HEADER.unpack(header)
    if magic != META_MAGIC or fmt != META_FORMAT or have < version:
        raise Mismatch(f"meta header {magic!r}/{fmt} at version {have}, want {version}")
    chunk_len = os.fstat(data_fd).st_size
    end = min(offset + length, chunk_len)
    if end <= offset:
        return b""
    first, last = offset // BLOCK_SIZE, (end - 1) // BLOCK_SIZE
    start, stop = first * BLOCK_SIZE, min((last + 1) * BLOCK_SIZE, chunk_len)
    raw = os.pread(data_fd, stop - start, start)
    count = last - first + 1
    crc_raw = os.pread(meta_fd, 4 * count, META_HEADER.size + 4 * first)
    if len(raw) != stop - start or len(crc_raw) != 4 * count:
        raise Mismatch("chunk shorter than its length")
    crcs = struct.unpack(f"<{count}I", crc_raw)
    view = memoryview(raw)
    for i in range(count):
        if crc32c.crc32c(view[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]) != crcs[i]:
            raise Mismatch(f"block {first + i}: checksum mismatch")
    if offset == start and end == stop:
        return raw
    return bytes(view[offset - start:end - start])
